"""The demo city seeded by ``healthcode up``: Panzhihua's six divisions, a checkpoint in each,
officials, checkpoint staff and an enrolled edge device.

All demo people are synthetic (phones in the 1380000xxxx range). The accounts and the device token
are written to ``$HEALTHCODE_HOME/demo.json`` (0600) for developers; nothing is printed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import select

from healthcode.common.identity import PANZHIHUA_DIVISIONS
from healthcode.server.common.principal import Role
from healthcode.server.db.base import utcnow
from healthcode.server.db.models import AuthSession, Checkpoint, Device, Setting

DEMO_CHECKPOINTS: tuple[tuple[str, str, str], ...] = (
    ("510402", "炳草岗大街社区东门", "东区炳草岗大街"),
    ("510403", "清香坪街道卡口", "西区清香坪"),
    ("510411", "仁和区政务服务中心", "仁和区宝兴南路"),
    ("510421", "米易县高速出口", "米易县攀莲镇"),
    ("510422", "盐边县客运站", "盐边县桐子林镇"),
    ("510400", "攀枝花火车站出站口", "东区攀枝花火车站"),
)

DEMO_ACCOUNTS: tuple[tuple[str, str, Role, int | None, str | None], ...] = (
    # phone, display name, role, checkpoint index, division
    ("13800000001", "演示测温员（东区）", Role.STAFF, 0, "510402"),
    ("13800000002", "东区卫健局 演示管理员", Role.DISTRICT_ADMIN, None, "510402"),
    ("13800000003", "市卫健委 演示官员甲", Role.HEALTH_AUTHORITY, None, None),
    ("13800000004", "市卫健委 演示官员乙", Role.HEALTH_AUTHORITY, None, None),
    ("13800000005", "市网信办 演示安全员", Role.SECURITY_OFFICER, None, None),
)


def seed_demo(home: Path, *, vault_address: str) -> Path | None:
    """Seed the demo city once (a no-op afterwards); returns the summary file when it seeded."""
    return asyncio.run(_seed(home, vault_address))


async def _seed(home: Path, vault_address: str) -> Path | None:
    from healthcode.server.app import build_platform
    from healthcode.server.auth.bootstrap import create_staff_account
    from healthcode.server.settings import ServerSettings

    settings = ServerSettings(home=home, privacy_vault_address=vault_address)
    platform = await build_platform(settings)
    try:
        seeded = await platform.db.run(lambda s: s.get(Setting, "demo_seeded") is not None)
        if seeded:
            return None
        checkpoint_ids = await platform.db.run(_create_checkpoints)
        accounts: list[dict[str, Any]] = []
        for phone, display, role, cp_index, division in DEMO_ACCOUNTS:
            checkpoint_id = checkpoint_ids[cp_index] if cp_index is not None else None
            account_id = await create_staff_account(
                platform, phone, display, role, checkpoint_id, division
            )
            accounts.append(
                {
                    "phone": phone,
                    "display_name": display,
                    "role": role.value,
                    "account_id": account_id,
                    "checkpoint_id": checkpoint_id,
                }
            )
        device_token = secrets.token_urlsafe(32)
        device_id = await platform.db.run(_enrol_device, checkpoint_ids[0], device_token)
        summary = {
            "note": "synthetic demo data; log in with these phones; codes go to sms-outbox.jsonl",
            "checkpoints": dict(zip([c[1] for c in DEMO_CHECKPOINTS], checkpoint_ids, strict=True)),
            "accounts": accounts,
            "device": {
                "device_id": device_id,
                "checkpoint_id": checkpoint_ids[0],
                "token": device_token,
            },
        }
        path = home / "demo.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, ensure_ascii=False, indent=2)
        return path
    finally:
        await platform.vault.close()
        platform.db.close()


def _create_checkpoints(session: Any) -> list[str]:
    ids = []
    for division, name, location in DEMO_CHECKPOINTS:
        assert division in PANZHIHUA_DIVISIONS
        existing = session.scalar(select(Checkpoint).where(Checkpoint.name == name))
        checkpoint = existing or Checkpoint(name=name, division_code=division, location=location)
        session.add(checkpoint)
        session.flush()
        ids.append(checkpoint.id)
    return ids


def _enrol_device(session: Any, checkpoint_id: str, token: str) -> str:
    device = Device(checkpoint_id=checkpoint_id, name="demo-gate-01")
    session.add(device)
    session.flush()
    session.add(
        AuthSession(access_hash=hashlib.sha256(token.encode()).digest(), device_id=device.id)
    )
    session.add(Setting(key="demo_seeded", value=utcnow().isoformat()))
    return device.id
