"""The audit token index (ADR 0105): derived data, bucketed, built off the chain lock.

Searches by token must find exactly the events whose token list names the token, whatever the
index went through: several buckets, a restart, a deleted or outdated index, a write lock held by
someone else while the vault appends, a token list that no longer parses.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from healthcode_sdk._gen.healthcode.vault.v1 import audit_service_pb2
from sqlalchemy import select, text, update

from healthcode.vault import FieldType, TokenizeItem
from healthcode.vault.audit import verify_database
from healthcode.vault.db import audit_index_file
from healthcode.vault.models import audit_events, audit_index_state
from tests.vault.conftest import COMBOS, bearer
from tests.vault.helpers import id_number, phone

pytestmark = pytest.mark.slow

SQLITE, POSTGRESQL = COMBOS[0], COMBOS[2]
NO_BACKGROUND = {"audit_index_interval": 3600.0}  # the tests decide when the index catches up


async def make_events(env, people: int = 6) -> list[str]:
    """Tokenize ``people`` new people, then detokenize overlapping groups of their tokens."""
    client = env.client()
    tokens: list[str] = []
    first = env.people_made = getattr(env, "people_made", 0)
    env.people_made += people
    for n in range(first, first + people):
        res = await client.tokenize(
            [
                TokenizeItem(FieldType.ID_NUMBER, id_number(100 + n), f"s{n}"),
                TokenizeItem(FieldType.PHONE, phone(100 + n), f"s{n}"),
            ]
        )
        tokens += [r.token for r in res]
    for start in range(0, len(tokens) - 2, 2):
        await client.detokenize(tokens[start : start + 4], "CORRECTION_REVIEW")
    return tokens


def expected(env, token: str) -> list[int]:
    """Positions of the events whose stored token list names ``token`` (read without the index)."""
    with env.db().connect() as conn:
        found = conn.execute(select(audit_events.c.seq, audit_events.c.tokens)).all()
    out = []
    for seq, tokens in found:
        try:
            listed = json.loads(tokens)
        except ValueError:
            continue
        if token in listed:
            out.append(int(seq))
    return sorted(out)


async def search(env, token: str) -> list[int]:
    page = await env.audit_stub().ListAccessEvents(
        audit_service_pb2.ListAccessEventsRequest(token=token, page_size=1000),
        metadata=bearer(env.officer_credential),
    )
    return [e.sequence for e in page.events]


def index_state(env) -> tuple[int, int]:
    """(indexed position, newest bucket) as the vault's own engine (index attached) sees them."""
    with env.server.core.engine.connect() as conn:
        row = conn.execute(
            select(audit_index_state.c.indexed_seq, audit_index_state.c.bucket)
        ).one()
    return int(row.indexed_seq), int(row.bucket)


def index_files(index_file: Path) -> list[Path]:
    """The index database and its WAL files."""
    return list(index_file.parent.glob(index_file.name + "*"))


async def assert_searches(env, tokens: list[str]) -> None:
    for token in tokens:
        want = expected(env, token)
        assert want, "every token is listed by at least its tokenize event"
        assert await search(env, token) == want


@pytest.mark.parametrize(("backend", "db"), [SQLITE, POSTGRESQL])
async def test_search_spans_buckets_and_survives_a_restart(vault_factory, backend, db) -> None:
    env = await vault_factory(backend, db, **NO_BACKGROUND)
    env.server.core.audit.bucket_entries = 5  # a new bucket after each indexing step here
    tokens: list[str] = []
    for _ in range(3):  # each search first indexes what was appended since the last one
        tokens += await make_events(env, people=2)
        await assert_searches(env, tokens)
    indexed, bucket = index_state(env)
    assert bucket >= 3
    assert indexed >= max(expected(env, tokens[-1]))
    await env.restart()
    env.server.core.audit.bucket_entries = 5
    client = env.client()
    await client.detokenize(tokens[:2], "CORRECTION_REVIEW")
    await assert_searches(env, tokens)
    assert index_state(env)[0] > indexed


async def test_sqlite_index_is_its_own_file_and_is_rebuilt(vault_factory) -> None:
    env = await vault_factory(**NO_BACKGROUND)
    tokens = await make_events(env, people=3)
    await assert_searches(env, tokens)
    database = env.settings.vault_dir / "vault.sqlite3"
    index_file = Path(audit_index_file(str(database)))
    assert index_file.name == "vault.audit-index.sqlite3"
    assert index_files(index_file)
    with sqlite3.connect(database) as conn:  # nothing of the index is left in the vault database
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert not {"audit_token_index", "audit_index_state", "token_index", "state"} & tables

    await env.server.stop()
    for leftover in index_files(index_file):
        leftover.unlink()
    await env.start()
    assert index_state(env) == (0, 0)
    await assert_searches(env, tokens)

    with env.server.core.engine.begin() as conn:  # an index of an older format is replaced
        conn.execute(update(audit_index_state).values(format=0, indexed_seq=2))
    await env.restart()
    assert index_state(env) == (0, 0)
    await assert_searches(env, tokens)


@pytest.mark.parametrize(("backend", "db"), [SQLITE, POSTGRESQL])
async def test_appends_go_on_while_the_index_is_locked(vault_factory, backend, db) -> None:
    """Whoever holds the index's write lock, the vault keeps appending events.

    The lock is held for the whole of the calls: if an append needed it, the call would wait
    out the database's busy timeout and fail.
    """
    env = await vault_factory(backend, db, **NO_BACKGROUND)
    tokens = await make_events(env, people=2)
    url = env.settings.effective_database_url
    if db == "sqlite":
        holder = sqlite3.connect(audit_index_file(url.removeprefix("sqlite:///")))
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE state SET bucket = bucket WHERE id = 1")
    else:
        lock = env.db().connect()
        lock.execute(text("SELECT 1 FROM audit_index.state WHERE id = 1 FOR UPDATE"))
    try:
        client = env.client()
        more = await client.tokenize([TokenizeItem(FieldType.PHONE, phone(300), "s300")])
        await client.detokenize([*tokens, more[0].token], "CORRECTION_REVIEW")
        await client.mask(tokens)
    finally:
        if db == "sqlite":
            holder.rollback()
            holder.close()
        else:
            lock.rollback()
            lock.close()
    await assert_searches(env, [*tokens, more[0].token])


@pytest.mark.parametrize(("backend", "db"), [SQLITE, POSTGRESQL])
async def test_an_unreadable_token_list_does_not_stop_the_index(vault_factory, backend, db) -> None:
    env = await vault_factory(backend, db, **NO_BACKGROUND)
    tokens = await make_events(env, people=2)
    with env.db().begin() as conn:  # an attacker's edit: caught by VerifyAuditLog, not here
        conn.execute(update(audit_events).where(audit_events.c.seq == 2).values(tokens='["broken'))
        conn.execute(
            update(audit_events)
            .where(audit_events.c.seq == 3)
            .values(tokens=json.dumps([tokens[0], tokens[2], 7, None, {"x": 1}]))
        )
    await assert_searches(env, tokens[:3])
    assert await search(env, tokens[2]) == [3]
    assert await search(env, tokens[3]) == []  # listed only by the unreadable event
    assert index_state(env)[0] >= 3
    report = verify_database(env.db())  # and verification names both rows instead of failing
    assert {(f.kind.value, f.seq) for f in report.findings} == {("MODIFIED", 2), ("MODIFIED", 3)}
