"""The transit backend logs in with AppRole (no static token), with a least-privilege policy, and
logs in again when its token is revoked."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from healthcode.vault import FieldType, TokenizeItem
from tests.fixtures.openbao import OpenBao
from tests.vault.helpers import id_number, phone

pytestmark = pytest.mark.openbao


def _approle(bao: OpenBao, kek: str, bidx: str) -> tuple[str, str]:
    root = bao.client()
    if "approle/" not in root.sys.list_auth_methods():
        root.sys.enable_auth_method("approle")
    policy = f"""
path "transit/keys/{kek}" {{ capabilities = ["read"] }}
path "transit/keys/{bidx}" {{ capabilities = ["read"] }}
path "transit/encrypt/{kek}" {{ capabilities = ["update"] }}
path "transit/decrypt/{kek}" {{ capabilities = ["update"] }}
path "transit/rewrap/{kek}" {{ capabilities = ["update"] }}
path "transit/hmac/{bidx}/*" {{ capabilities = ["update"] }}
"""
    name = f"healthcode-vault-{secrets.token_hex(3)}"
    root.sys.create_or_update_policy(name=name, policy=policy)
    root.auth.approle.create_or_update_approle(
        role_name=name, token_policies=[name], token_ttl="5m"
    )
    role_id = root.auth.approle.read_role_id(role_name=name)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(role_name=name)["data"]["secret_id"]
    return role_id, secret_id


async def test_transit_backend_with_approle(vault_factory: Any, openbao: OpenBao) -> None:
    suffix = secrets.token_hex(4)
    kek, bidx = f"kek-{suffix}", f"bidx-{suffix}"
    # The keys are created by an operator up front; the vault's role may only use them.
    root = openbao.client()
    root.secrets.transit.create_key(name=kek)
    root.secrets.transit.create_key(name=bidx)
    role_id, secret_id = _approle(openbao, kek, bidx)
    env = await vault_factory(
        "transit",
        transit_token=None,
        approle_role_id=role_id,
        approle_secret_id=secret_id,
        transit_kek_name=kek,
        transit_bidx_name=bidx,
    )
    client = env.client()
    values = [id_number(88), phone(88)]
    results = await client.tokenize(
        [
            TokenizeItem(FieldType.ID_NUMBER, values[0], "approle-subject"),
            TokenizeItem(FieldType.PHONE, values[1], "approle-subject"),
        ]
    )
    tokens = [r.token for r in results]
    assert await client.detokenize(tokens, "CORRECTION_REVIEW") == values
    assert await client.lookup(FieldType.ID_NUMBER, [values[0]]) == [tokens[0]]

    # Revoke every token of the role: the backend logs in again with its secret id.
    revoked = 0
    for accessor in root.list("auth/token/accessors")["data"]["keys"]:
        info = root.auth.token.lookup_accessor(accessor)["data"]
        if (info.get("meta") or {}).get("role_name", "").startswith("healthcode-vault-"):
            root.auth.token.revoke_accessor(accessor)
            revoked += 1
    assert revoked >= 1
    again = await client.tokenize([TokenizeItem(FieldType.PHONE, phone(89), "approle-2")])
    assert again[0].token
