"""SQLite's one writer at a time, served first come, first served by the engine (store/db.py `WriterQueue`)."""

import sqlite3
import threading
import time

import pytest
from sqlalchemy import text

from ceti.store.db import WriterQueue, make_engine


def test_writers_take_turns_in_arrival_order_and_each_waits_for_the_previous_to_finish():
    queue = WriterQueue()
    order: list[str] = []
    queue.acquire("a")
    threads = []
    for name in ("b", "c", "d"):
        def wait_turn(name=name):
            queue.acquire(name)
            order.append(name)
            queue.release(name)
        t = threading.Thread(target=wait_turn)
        t.start()
        threads.append(t)
        time.sleep(0.05)  # b, then c, then d join the queue
    assert order == []  # a still writes
    queue.release("a")
    for t in threads:
        t.join(5)
    assert order == ["b", "c", "d"]


def test_a_writer_that_never_gets_its_turn_gives_up_with_a_locked_error_and_leaves_the_queue():
    queue = WriterQueue(timeout_s=0.2)
    queue.acquire("holder")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        queue.acquire("late")
    queue.release("late")  # not the owner: changes nothing
    queue.release("holder")
    queue.acquire("next")  # free again, and the one that gave up is not served
    queue.release("next")


def test_concurrent_writers_on_one_sqlite_file_all_commit(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}", pool_size=12)
    with engine.begin() as conn:
        conn.execute(text("create table t (id integer primary key, n integer)"))
        conn.execute(text("create table log (id integer primary key autoincrement, who integer)"))
        conn.execute(text("insert into t values (1, 0)"))
    errors: list[BaseException] = []

    def write(who: int):
        try:
            for _ in range(25):
                with engine.begin() as conn:
                    conn.execute(text("select n from t where id = 1")).scalar_one()
                    conn.execute(text("update t set n = n + 1 where id = 1"))
                    conn.execute(text("insert into log (who) values (:w)"), {"w": who})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors  # no "database is locked", however the writers collide
    with engine.connect() as conn:
        assert conn.execute(text("select n from t")).scalar_one() == 200
        assert conn.execute(text("select count(*) from log")).scalar_one() == 200
    engine.dispose()
