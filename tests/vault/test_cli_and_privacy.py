"""Operator CLI and the no-plaintext guarantee for the vault's database files and logs."""

from __future__ import annotations

import base64
import logging
import stat

import pytest
from typer.testing import CliRunner

from healthcode.common.errors import InvalidArgument, NotFound, PermissionDenied
from healthcode.vault import FieldType, TokenizeItem
from healthcode.vault.auth import read_credential_file
from healthcode.vault.cli import vault_app
from tests.vault.helpers import id_number, phone

pytestmark = pytest.mark.slow


def encodings(value: str) -> list[bytes]:
    raw = value.encode()
    return [
        raw,
        raw.hex().encode(),
        raw.hex().upper().encode(),
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        value.encode("utf-16-le"),
        value.encode("utf-16-be"),
    ]


async def test_no_plaintext_in_database_files_or_logs(vault_factory, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    env = await vault_factory()
    client = env.client()
    secrets_ = [id_number(42), phone(42), "欧阳锋", "四川省攀枝花市西区格里坪镇 88 号"]
    items = [
        TokenizeItem(t, v, "who-42")
        for t, v in zip(
            [FieldType.ID_NUMBER, FieldType.PHONE, FieldType.NAME, FieldType.ADDRESS],
            secrets_,
            strict=True,
        )
    ]
    res = await client.tokenize(items)
    await client.lookup(FieldType.ID_NUMBER, [secrets_[0]])
    await client.detokenize([r.token for r in res], "CORRECTION_REVIEW")
    with pytest.raises(PermissionDenied):
        await client.detokenize([res[1].token], "IDENTITY_VERIFICATION")
    with pytest.raises(InvalidArgument):  # a wrong value must not be echoed either
        await client.tokenize([TokenizeItem(FieldType.PHONE, secrets_[1] + "9", "who-42")])
    with pytest.raises(NotFound):
        await client.mask(["phn_" + "b" * 26])
    await env.server.stop()
    files = [p for p in env.settings.vault_dir.iterdir() if p.is_file()]
    assert any(p.name == "vault.sqlite3" for p in files)
    blobs = {p.name: p.read_bytes() for p in files}
    blobs["logs"] = (caplog.text + "\n".join(str(r.msg) for r in caplog.records)).encode()
    assert b"vault.serving" in blobs["logs"]  # the logs really were captured
    for value in secrets_:
        for form in encodings(value):
            for name, blob in blobs.items():
                assert form not in blob, f"a secret value was found in {name}"


def test_cli_credentials_keys_and_audit(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HEALTHCODE_HOME", str(tmp_path))
    runner = CliRunner()
    created = runner.invoke(
        vault_app,
        [
            "credentials",
            "create",
            "--role",
            "key_admin",
            "--name",
            "ops",
            "--output",
            str(tmp_path / "ops.cred"),
        ],
    )
    assert created.exit_code == 0, created.output
    assert stat.S_IMODE((tmp_path / "ops.cred").stat().st_mode) == 0o600
    assert read_credential_file(tmp_path / "ops.cred").startswith("hcv1.")
    bad = runner.invoke(vault_app, ["credentials", "create", "--role", "root", "--name", "x"])
    assert bad.exit_code == 1 and "unknown role" in bad.output

    status = runner.invoke(vault_app, ["keys", "status"])
    assert status.exit_code == 0 and "current version 1" in status.output
    rotated = runner.invoke(vault_app, ["keys", "rotate", "--reference", "CHG-9"])
    assert rotated.exit_code == 0 and "current version 2" in rotated.output
    rewrap = runner.invoke(vault_app, ["keys", "rewrap", "--retire"])
    assert rewrap.exit_code == 0, rewrap.output
    assert "min decryption version 2" in rewrap.output  # the audit signing key moved too
    verify = runner.invoke(vault_app, ["audit", "verify"])
    assert verify.exit_code == 0 and "OK" in verify.output
    revoked = runner.invoke(vault_app, ["credentials", "revoke", "--name", "ops"])
    assert revoked.exit_code == 0 and "revoked 1" in revoked.output
