"""Unit tests: field rules, policy, settings, data-key cache, local key file, public surface."""

from __future__ import annotations

import json
import stat
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import healthcode.vault
from healthcode.vault import crypto
from healthcode.vault.dek_cache import DekCache
from healthcode.vault.fields import (
    FieldType,
    Purpose,
    ValueError_,
    is_token,
    mask,
    new_token,
    normalize,
    token_field_type,
)
from healthcode.vault.keys.base import UnwrapFailure
from healthcode.vault.keys.local import LocalBackend
from healthcode.vault.policy import Access, PolicyError, PolicyStore, parse_policy
from healthcode.vault.settings import VaultSettings
from tests.vault.helpers import id_number


def test_public_surface_is_pinned() -> None:
    assert sorted(healthcode.vault.__all__) == [
        "DetokenizedItem",
        "FieldType",
        "Purpose",
        "TokenResult",
        "TokenizeItem",
        "VaultClient",
        "VaultServer",
        "VaultSettings",
        "run_vault",
        "serve",
    ]


@pytest.mark.parametrize(
    ("field_type", "raw", "canonical", "masked"),
    [
        (FieldType.ID_NUMBER, " 11010519491231002x ", "11010519491231002X", "1***************2X"),
        (FieldType.ID_NUMBER, id_number(1, region="810000"), id_number(1, region="810000"), None),
        (FieldType.ID_NUMBER, "usa123468010101", "USA123468010101", "U************01"),
        (FieldType.PHONE, "+86 139-1234-5678", "13912345678", "139****5678"),
        (FieldType.NAME, " 欧阳  娜娜 ", "欧阳 娜娜", "欧****"),
        (
            FieldType.ADDRESS,
            "四川省攀枝花市东区炳草岗大街1号",
            "四川省攀枝花市东区炳草岗大街1号",
            "四川省攀枝花********",
        ),
    ],
)
def test_normalize_and_mask(field_type, raw, canonical, masked) -> None:
    assert normalize(field_type, raw) == canonical
    if masked is not None:
        assert mask(field_type, canonical) == masked


@pytest.mark.parametrize(
    ("field_type", "raw"),
    [
        (FieldType.ID_NUMBER, "110105194912310021"),  # wrong check character
        (FieldType.ID_NUMBER, "11010519491331002X"),  # month 13
        (FieldType.ID_NUMBER, "1101051949123100"),
        (FieldType.PHONE, "12912345678"),
        (FieldType.PHONE, "1391234567"),
        (FieldType.NAME, ""),
        (FieldType.NAME, "a\x00b"),
        (FieldType.ADDRESS, "x" * 201),
    ],
)
def test_invalid_values_are_rejected_without_echoing_them(field_type, raw) -> None:
    with pytest.raises(ValueError_) as err:
        normalize(field_type, raw)
    assert raw not in err.value.description or not raw


@given(st.sampled_from(list(FieldType)))
def test_tokens_are_random_and_typed(field_type: FieldType) -> None:
    a, b = new_token(field_type), new_token(field_type)
    assert a != b and is_token(a) and token_field_type(a) is field_type


def test_ciphertext_is_bound_to_type_token_and_subject() -> None:
    dek = crypto.new_data_key()
    blob = crypto.encrypt_value(dek, FieldType.NAME, "nam_x", "s1", "张三")
    assert crypto.decrypt_value(dek, FieldType.NAME, "nam_x", "s1", blob) == "张三"
    for args in [
        (FieldType.ADDRESS, "nam_x", "s1"),
        (FieldType.NAME, "nam_y", "s1"),
        (FieldType.NAME, "nam_x", "s2"),
    ]:
        with pytest.raises(crypto.IntegrityFailure):
            crypto.decrypt_value(dek, *args, blob)
    with pytest.raises(crypto.IntegrityFailure):
        crypto.decrypt_value(crypto.new_data_key(), FieldType.NAME, "nam_x", "s1", blob)
    # Identifier blind indexes ignore the subject; names are scoped to their subject.
    assert crypto.blind_index_message(FieldType.PHONE, "1", "a") == crypto.blind_index_message(
        FieldType.PHONE, "1", "b"
    )
    assert crypto.blind_index_message(FieldType.NAME, "1", "a") != crypto.blind_index_message(
        FieldType.NAME, "1", "b"
    )


def test_policy_most_restrictive_rule_wins_and_default_is_deny() -> None:
    policy = parse_policy(
        "version = 3\n"
        '[[rule]]\ncallers = ["*"]\nfields = ["*"]\npurposes = ["*"]\naccess = "plain"\n'
        '[[rule]]\ncallers = ["role:platform"]\nfields = ["PHONE"]\npurposes = ["*"]\n'
        'access = "masked"\n'
        '[[rule]]\ncallers = ["edge"]\nfields = ["*"]\npurposes = ["CORRECTION_REVIEW"]\n'
        'access = "deny"\n'
    )
    assert policy.version == 3
    assert (
        policy.decide("srv", "platform", FieldType.NAME, Purpose.CORRECTION_REVIEW) is Access.PLAIN
    )
    assert (
        policy.decide("srv", "platform", FieldType.PHONE, Purpose.CORRECTION_REVIEW)
        is Access.MASKED
    )
    assert (
        policy.decide("edge", "platform", FieldType.NAME, Purpose.CORRECTION_REVIEW) is Access.DENY
    )
    empty = parse_policy("version = 1\n")
    assert (
        empty.decide("a", "platform", FieldType.NAME, Purpose.DATA_SUBJECT_REQUEST) is Access.DENY
    )


_RULE = 'version = 1\n[[rule]]\ncallers = {c}\nfields = {f}\npurposes = ["*"]\naccess = {a}\n'


@pytest.mark.parametrize(
    "text",
    [
        "",
        "version = 0",
        "version = 1\nextra = 2",
        _RULE.format(c="[]", f='["*"]', a='"plain"'),
        _RULE.format(c='["*"]', f='["SSN"]', a='"plain"'),
        _RULE.format(c='["*"]', f='["*"]', a='"all"'),
        _RULE.format(c='["*"]', f='["*"]', a='"plain"') + 'why = "x"\n',
    ],
)
def test_broken_policies_are_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_policy_reload_keeps_last_good_version(tmp_path) -> None:
    path = tmp_path / "policy.toml"
    store = PolicyStore(path)
    assert store.current().version == 1 and "role:platform" in path.read_text()
    path.write_text("version = 2\n")
    assert store.reload_now().version == 2
    path.write_text("version = ")
    time.sleep(0.01)
    assert store.reload_now().version == 2  # broken file refused
    path.write_text("version = 1\n")
    assert store.reload_now().version == 2  # a lower version is refused


def test_settings_env_and_defaults(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HEALTHCODE_HOME", str(tmp_path))
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:8200")
    monkeypatch.setenv("VAULT_TOKEN", "s.secret")
    monkeypatch.setenv("HEALTHCODE_VAULT_BACKEND", "transit")
    settings = VaultSettings()
    assert settings.home == tmp_path
    assert settings.listen == "127.0.0.1:50052"
    assert settings.effective_database_url == f"sqlite:///{tmp_path}/vault/vault.sqlite3"
    assert settings.platform_credential_file == tmp_path / "vault" / "platform-server.credential"
    assert settings.transit_addr == "http://127.0.0.1:8200"
    assert "s.secret" not in repr(settings)
    # Values passed in code win over the environment.
    assert VaultSettings(backend="local", listen="127.0.0.1:0").backend == "local"
    with pytest.raises(Exception):  # noqa: B017, PT011 - pydantic's ValidationError for frozen
        settings.listen = "x"  # type: ignore[misc]


def test_dek_cache_is_bounded_and_expires(monkeypatch) -> None:
    cache = DekCache(max_size=2, ttl=10)
    for name in "abc":
        cache.put(name, name.encode())
    assert cache.get("a") is None and cache.get("c") == b"c" and len(cache) == 2
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 11)
    assert cache.get("c") is None
    cache.put("d", b"d")
    cache.clear()
    assert len(cache) == 0


def test_local_key_file_rotation_and_retirement(tmp_path) -> None:
    path = tmp_path / "vault" / "keys.json"
    backend = LocalBackend.open(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = [crypto.new_data_key() for _ in range(3)]
    wrapped = backend.wrap(keys)
    assert {w.version for w in wrapped} == {1}
    assert backend.unwrap([w.ciphertext for w in wrapped]) == keys
    # A second process rotates; this one notices the new version when it meets it.
    other = LocalBackend.open(path)
    assert other.rotate().current_version == 2
    rewrapped = other.rewrap([wrapped[0].ciphertext])
    assert rewrapped[0].version == 2
    assert backend.unwrap([rewrapped[0].ciphertext]) == keys[:1]
    assert backend.status().current_version == 2
    assert other.retire(2).min_decryption_version == 2
    with pytest.raises(UnwrapFailure):
        backend.unwrap([wrapped[1].ciphertext])
    doc = json.loads(path.read_text())
    assert list(doc["kek"]) == ["2"] and doc["bidx"]
    tampered = rewrapped[0].ciphertext[:-4] + (
        "AAAA" if not rewrapped[0].ciphertext.endswith("AAAA") else "BBBB"
    )
    with pytest.raises(UnwrapFailure):
        backend.unwrap([tampered])
    # The blind-index key is separate and stable across KEK rotation.
    assert backend.blind_index([b"x"]) == LocalBackend.open(path).blind_index([b"x"])


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    texts=st.lists(st.text(), min_size=7, max_size=7),
    tokens=st.lists(_JSONISH, max_size=6),
    subjects=st.lists(st.text(), max_size=3),
    numbers=st.tuples(st.integers(0, 2**62), st.integers(0, 2**62), st.integers(0, 2**31)),
)
def test_canonical_content_is_the_sorted_key_json_of_the_whole_event(
    texts: list[str], tokens: list[object], subjects: list[str], numbers: tuple[int, int, int]
) -> None:
    """The event hash covers exactly this JSON: the tokens splice must never change it."""
    from healthcode.vault.audit import canonical_content, json_list

    names = ["event_id", "caller", "caller_role", "action", "purpose", "outcome", "reason"]
    doc: dict[str, object] = dict(zip(names, texts, strict=True))
    doc |= {
        "seq": numbers[0],
        "occurred_at": numbers[1],
        "policy_version": numbers[2],
        "tokens": tokens,
        "subject_ids": subjects,
        "field_types": ["PHONE", "名字"],
        "reference": "R-1",
        "request_id": "",
    }
    whole = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    kwargs: dict = dict(doc)
    assert canonical_content(**kwargs) == whole
    assert canonical_content(**kwargs, tokens_json=json_list(tokens)) == whole


def test_client_reads_per_item_answers_of_a_vault_without_columns() -> None:
    """During a rolling upgrade an older vault ignores ``columns``; the client still reads it."""
    from healthcode_sdk._gen.healthcode.vault.v1 import vault_pb2, vault_service_pb2

    from healthcode.vault.client import columns_of

    old = vault_service_pb2.DetokenizeBatchResponse(policy_version=3)
    old.values.add(token="a", value="张三", masked=False, field_type=vault_pb2.FIELD_TYPE_NAME)
    phone = vault_pb2.FIELD_TYPE_PHONE
    old.values.add(token="b", value="139****0001", masked=True, field_type=phone)
    got = columns_of(old)
    assert list(got.values) == ["张三", "139****0001"]
    assert list(got.masked) == [False, True]
    assert list(got.field_types) == [vault_pb2.FIELD_TYPE_NAME, vault_pb2.FIELD_TYPE_PHONE]
    new = vault_service_pb2.DetokenizeBatchResponse()
    new.columns.values.append("x")
    assert list(columns_of(new).values) == ["x"]
