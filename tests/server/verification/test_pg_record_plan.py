"""The PostgreSQL VerifyCode statement looks holders up by key, whatever the statistics say.

A freshly migrated or bulk-loaded database has no planner statistics until autovacuum analyses
it. With a plain join the planner then guessed one row per table and scanned every person and
every code for each batch (5.5 ms instead of 0.2 ms for eight scans). The statement fences its
lookups in LATERAL subqueries so that each scan is an index lookup on the code's and the person's
primary keys; this test reads the plan of a real execution on an unanalysed database.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, insert

from healthcode.server.codes.models import IssuedCodeRecord
from healthcode.server.db.base import new_id
from healthcode.server.db.migrate import upgrade
from healthcode.server.db.models import Checkpoint, Person
from healthcode.server.status.rules import RULES_VERSION
from healthcode.server.verification.store import GREEN, PG_RECORD

pytestmark = pytest.mark.postgres

PERSONS = 300
CODES_PER_PERSON = 10


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_holder_lookups_use_primary_keys_without_statistics(
    pg_database_factory: Callable[[str], str],
) -> None:
    url = pg_database_factory("plan")
    upgrade(url)
    engine = create_engine(url)
    now = dt.datetime.now(dt.UTC)
    persons = [new_id() for _ in range(PERSONS)]
    checkpoint = new_id()
    ctis = [secrets.token_bytes(16) for _ in range(PERSONS * CODES_PER_PERSON)]
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(Checkpoint),
                [{"id": checkpoint, "name": "gate", "division_code": "510402"}],
            )
            conn.execute(
                insert(Person),
                [
                    {
                        "id": pid,
                        "id_token": f"tok-{pid}",
                        "name_token": f"name-{pid}",
                        "id_type": "RESIDENT",
                        "masked_name": "*",
                        "masked_id_number": "*",
                        "division_code": "510402",
                        "color": GREEN,
                        "rules_version": RULES_VERSION,
                    }
                    for pid in persons
                ],
            )
            conn.execute(
                insert(IssuedCodeRecord),
                [
                    {
                        "cti": cti,
                        "person_id": persons[n % PERSONS],
                        "kind": 1,
                        "signed_color": GREEN,
                        "kid": b"\0" * 8,
                        "issued_by": "test",
                        "issued_at": now,
                        "expires_at": now + dt.timedelta(hours=1),
                    }
                    for n, cti in enumerate(ctis)
                ],
            )
        scans = 8
        params = {
            "cti": ctis[:scans],
            "id": [new_id() for _ in range(scans)],
            "checkpoint_id": [checkpoint] * scans,
            "division_code": ["510402"] * scans,
            "direction": [1] * scans,
            "method": [1] * scans,
            "temperature": [36.5] * scans,
            "occurred_at": [now] * scans,
            "source_id": ["staff"] * scans,
            "scan_id": [new_id() for _ in range(scans)],
            "created_at": [now] * scans,
            "green_decision": [1] * scans,
            "other_decision": [2] * scans,
            "rules_version": RULES_VERSION,
            "green": GREEN,
        }
        with engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + PG_RECORD, params)
            row = cursor.fetchone()
            assert row is not None
            explained = row[0]
            conn.rollback()
        document = explained if isinstance(explained, list) else json.loads(explained)
        nodes = list(_nodes(document[0]["Plan"]))
        by_table = {
            node["Relation Name"]: node for node in nodes if node.get("Relation Name") is not None
        }
        for table in ("issued_codes", "persons"):
            lookup = by_table[table]
            # One key lookup per scan, each finding exactly its one row.
            assert lookup["Node Type"] == "Index Scan", (table, lookup["Node Type"])
            assert lookup["Actual Loops"] == scans, (table, lookup["Actual Loops"])
            assert lookup["Actual Rows"] == 1, (table, lookup["Actual Rows"])
        # Every scan found its holder and got its passage row.
        assert by_table["passages"]["Actual Rows"] == scans
    finally:
        engine.dispose()
