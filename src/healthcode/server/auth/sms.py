"""Where SMS login codes go: a pluggable sender.

The development sender appends JSON lines to ``$HEALTHCODE_HOME/sms-outbox.jsonl`` with the masked
phone, the code and a reference (HMAC of the phone with the server secret) so tests and developers
can find a code without the plaintext phone ever being written down.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Protocol

import structlog

from healthcode.common.identity import mask_phone
from healthcode.server.auth.tokens import phone_ref
from healthcode.server.db.base import utcnow
from healthcode.server.settings import ServerSettings

log = structlog.get_logger("healthcode.sms")


class SmsSender(Protocol):
    """Delivers login codes."""

    async def send_login_code(self, phone: str, code: str) -> None:
        """Send ``code`` to the normalised mobile number ``phone``."""
        ...


class OutboxSmsSender:
    """Development sender: one JSON line per code in an outbox file (0600), phone masked."""

    def __init__(self, path: Path, secret: bytes | None = None) -> None:
        self.path = path
        self._secret = secret
        self._lock = threading.RLock()
        self._announced = False

    def bind_secret(self, secret: bytes) -> None:
        """Set the server secret used for the per-phone reference (the platform does this)."""
        self._secret = secret

    def reference(self, phone: str) -> str:
        """The reference written for ``phone`` (HMAC with the server secret)."""
        if self._secret is None:
            raise RuntimeError("OutboxSmsSender has no server secret")
        return phone_ref(self._secret, phone)

    def _append(self, line: str) -> None:
        with self._lock:
            self.announce()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    def announce(self) -> None:
        """Log where codes go (once per process)."""
        with self._lock:
            if not self._announced:
                log.info("development SMS outbox: codes are written to %s", self.path)
                self._announced = True

    async def send_login_code(self, phone: str, code: str) -> None:
        """Append the code to the outbox."""
        record = {
            "time": utcnow().isoformat(),
            "masked_phone": mask_phone(phone),
            "ref": self.reference(phone),
            "code": code,
            "kind": "login_code",
        }
        await asyncio.to_thread(self._append, json.dumps(record, ensure_ascii=False))


def read_outbox_code(path: Path, ref: str) -> str | None:
    """The newest code in an outbox file for a phone reference (tests, ``healthcode`` CLI)."""
    if not path.exists():
        return None
    code: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("ref") == ref:
            code = str(record.get("code"))
    return code


def make_sms_sender(settings: ServerSettings, secret: bytes | None = None) -> SmsSender:
    """The sender chosen by ``settings.sms_sender``.

    The outbox sender needs the server secret for its references; when it is not passed here, it
    is read from ``$HEALTHCODE_HOME/server/secret.key`` (created by ``build_platform`` first).
    """
    if settings.sms_sender == "outbox":
        if secret is None:
            # Imported here: platform.py imports this module's types for its annotations.
            from healthcode.server.platform import load_or_create_secret

            secret = load_or_create_secret(settings.server_dir / "secret.key")
        sender = OutboxSmsSender(settings.sms_outbox, secret)
        sender.announce()
        return sender
    raise ValueError(f"unknown SMS sender {settings.sms_sender!r}")  # pragma: no cover
