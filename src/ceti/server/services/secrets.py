"""Job secrets: encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256), handed only to the job's environment,
masked in its logs. The key comes from CETI_SECRET_KEY, or a key file made once in the data directory
(replicas on one PostgreSQL must share CETI_SECRET_KEY)."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from ceti.server.errors import BadRequest, NotFound
from ceti.server.services.tokens import new_id
from ceti.server.settings import Settings
from ceti.store import models as m

MAX_SECRET_BYTES = 64 * 1024


def load_key(data_dir: Path) -> bytes:
    path = data_dir / "secret.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
    return path.read_bytes().strip()


class SecretBox:
    def __init__(self, key: bytes):
        self._fernet = Fernet(key)
        self._key = key

    def derive(self, label: str) -> str:
        """A secret for `label`, the same on every replica that shares the key, stored nowhere."""
        return hmac.new(self._key, label.encode(), hashlib.sha256).hexdigest()

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise BadRequest("a stored secret cannot be decrypted with this server's key") from None


def put(s: Session, box: SecretBox, project_id: str, name: str, value: str, now: float) -> m.Secret:
    if len(value.encode()) > MAX_SECRET_BYTES:
        raise BadRequest(f"a secret may hold at most {MAX_SECRET_BYTES} bytes")
    if not value:
        raise BadRequest("a secret cannot be empty")
    row = s.scalar(select(m.Secret).where(m.Secret.project_id == project_id, m.Secret.name == name))
    if row is None:
        row = m.Secret(id=new_id(), project_id=project_id, name=name, ciphertext=box.seal(value),
                       created_at=now, updated_at=now)
        s.add(row)
    else:
        row.ciphertext, row.updated_at = box.seal(value), now
    return row


def names(s: Session, project_id: str) -> list[m.Secret]:
    return list(s.scalars(select(m.Secret).where(m.Secret.project_id == project_id).order_by(m.Secret.name)))


def delete(s: Session, project_id: str, name: str) -> None:
    row = s.scalar(select(m.Secret).where(m.Secret.project_id == project_id, m.Secret.name == name))
    if row is None:
        raise NotFound(f"no secret {name}")
    s.delete(row)


def missing(s: Session, project_id: str, wanted: list[str]) -> list[str]:
    if not wanted:  # most jobs name no secret: no read
        return []
    have = {r.name for r in names(s, project_id)}
    return [n for n in wanted if n not in have]


def values_for(s: Session, settings: Settings, project_id: str, wanted: list[str]) -> dict[str, str]:
    if not wanted:
        return {}
    box = settings.secret_box()
    rows = s.scalars(select(m.Secret).where(m.Secret.project_id == project_id, m.Secret.name.in_(wanted)))
    return {r.name: box.open(r.ciphertext) for r in rows}


def mask(text: str, values: list[str]) -> str:
    """Replace each secret value by asterisks of the same byte length, so log offsets stay true."""
    for value in sorted(values, key=len, reverse=True):
        if value and value in text:
            text = text.replace(value, "*" * len(value.encode()))
    return text
