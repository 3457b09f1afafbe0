"""Envelope encryption of values and blind-index inputs.

- Values are encrypted with AES-256-GCM under the subject's data key. The associated data binds
  the ciphertext to its field type, token and subject, so a ciphertext moved to another row fails.
- Ciphertext layout: ``0x01 | nonce (12) | ciphertext+tag``.
- Blind-index messages are domain-separated per field type; non-searchable types (names,
  addresses) also include the subject, so equal names of different people never link.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from healthcode.vault.fields import SEARCHABLE, FieldType

_VERSION = b"\x01"
DEK_BYTES = 32


class IntegrityFailure(Exception):
    """A ciphertext or wrapped key failed authentication."""


def new_data_key() -> bytes:
    """A fresh random 256-bit data key."""
    return os.urandom(DEK_BYTES)


def _aad(field_type: FieldType, token: str, subject_id: str) -> bytes:
    return b"\x00".join(
        (b"healthcode.vault.v1", field_type.value.encode(), token.encode(), subject_id.encode())
    )


_AAD_PREFIX = {f: b"healthcode.vault.v1\x00" + f.value.encode() + b"\x00" for f in FieldType}


def _cipher(dek: bytes | AESGCM) -> AESGCM:
    return dek if isinstance(dek, AESGCM) else AESGCM(dek)


def encrypt_value(
    dek: bytes | AESGCM, field_type: FieldType, token: str, subject_id: str, value: str
) -> bytes:
    """Encrypt one canonical value (``dek``: the data key, or a cipher holding it)."""
    nonce = os.urandom(12)
    sealed = _cipher(dek).encrypt(nonce, value.encode("utf-8"), _aad(field_type, token, subject_id))
    return _VERSION + nonce + sealed


def decrypt_value(
    dek: bytes | AESGCM, field_type: FieldType, token: str, subject_id: str, blob: bytes
) -> str:
    """Decrypt one value; raises :class:`IntegrityFailure` when anything was changed."""
    if len(blob) < 1 + 12 + 16 or blob[:1] != _VERSION:
        raise IntegrityFailure("malformed ciphertext")
    try:
        plain = _cipher(dek).decrypt(blob[1:13], blob[13:], _aad(field_type, token, subject_id))
    except InvalidTag as exc:
        raise IntegrityFailure("ciphertext authentication failed") from exc
    return plain.decode("utf-8")


class IntegrityFailureAt(IntegrityFailure):
    """Item ``index`` of a :func:`decrypt_values` batch failed authentication."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def decrypt_values(
    aeads: Sequence[AESGCM],
    field_types: Sequence[FieldType],
    tokens: Sequence[str],
    subject_ids: Sequence[str],
    blobs: Sequence[bytes],
) -> list[str]:
    """Decrypt many values (the detokenize hot path): same checks as :func:`decrypt_value`.

    Item ``i`` is ``blobs[i]`` under ``aeads[i]``, with the associated data of ``field_types[i]``,
    ``tokens[i]`` and ``subject_ids[i]`` built exactly as for single values. Raises
    :class:`IntegrityFailureAt` naming the first bad item.
    """
    out: list[str] = []
    append = out.append
    prefixes = _AAD_PREFIX
    for index, (aead, field_type, token, subject_id, blob) in enumerate(
        zip(aeads, field_types, tokens, subject_ids, blobs, strict=True)
    ):
        if len(blob) < 29 or blob[0] != 1:  # 1 + nonce (12) + tag (16); version 0x01
            raise IntegrityFailureAt(index, "malformed ciphertext")
        try:
            plain = aead.decrypt(
                blob[1:13],
                blob[13:],
                prefixes[field_type] + token.encode() + b"\x00" + subject_id.encode(),
            )
        except InvalidTag as exc:
            raise IntegrityFailureAt(index, "ciphertext authentication failed") from exc
        append(plain.decode("utf-8"))
    return out


def blind_index_message(field_type: FieldType, canonical: str, subject_id: str) -> bytes:
    """The HMAC input for a value's blind index."""
    parts = [b"healthcode.vault.bidx.v1", field_type.value.encode()]
    if field_type not in SEARCHABLE:
        parts.append(subject_id.encode())
    parts.append(canonical.encode("utf-8"))
    return b"\x00".join(parts)
