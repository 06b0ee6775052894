"""Replicas started together on a new PostgreSQL database: one migrates, the others wait and find it done."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import inspect, text

from ceti.store.db import make_engine, migrate


@pytest.mark.postgres
def test_three_replicas_migrating_one_new_database_at_once(postgres):
    url = postgres.new_database()
    engines = [make_engine(url) for _ in range(3)]
    try:
        with ThreadPoolExecutor(3) as pool:
            for future in [pool.submit(migrate, e) for e in engines]:
                future.result(timeout=120)  # none fails on a half-made schema or a duplicate table
        with engines[0].connect() as conn:
            heads = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert len(heads) == 1
        assert "leader_leases" in inspect(engines[0]).get_table_names()
    finally:
        for e in engines:
            e.dispose()
