"""Signing keys, their kids, and the set of public keys a verifier trusts.

An :class:`IssuerKey` is a P-256 private key with its issuer id (``CN-510400``), a *signing window*
(``not_before`` .. ``not_after``, Unix seconds: the key may sign codes, trust lists or revocation
lists issued inside it) and a :class:`KeyStatus`. Verifiers hold :class:`VerifierKey` objects, the
public half with the same metadata, grouped by kid in a :class:`KeyRing`.

Rotation: a new key becomes ``ACTIVE``, the old one ``RETIRED``. A retired key signs nothing new but
keeps verifying the codes it signed inside its window until they expire; once ``not_after`` plus
the longest code lifetime has passed it can leave the trust list. A ``REVOKED`` key (compromise)
verifies nothing.

The kid is the first 8 bytes of SHA-256 over the SubjectPublicKeyInfo DER (DESIGN.md §3). Kids
are not unique by construction, so a :class:`KeyRing` keeps every key per kid and verifiers try
them all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

#: COSE algorithm id of ES256 (ECDSA P-256 with SHA-256), RFC 9053.
ALG_ES256 = -7
#: Length of a kid in bytes.
KID_LENGTH = 8


class KeyStatus(StrEnum):
    """Lifecycle of a signing key."""

    ACTIVE = "ACTIVE"  #: signs new codes and verifies
    RETIRED = "RETIRED"  #: signs nothing new; verifies codes signed inside its window
    REVOKED = "REVOKED"  #: compromised or withdrawn; verifies nothing


def spki_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo DER of a public key."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def kid_for(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The kid of a key: the first 8 bytes of SHA-256 of its SubjectPublicKeyInfo DER."""
    return hashlib.sha256(spki_der(public_key)).digest()[:KID_LENGTH]


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def _check_p256(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("health-code keys are P-256 (ES256)")


def _check_window(not_before: int, not_after: int) -> None:
    if not_after < not_before:
        raise ValueError("not_after precedes not_before")


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A public key a verifier trusts, with the issuer and signing window it is trusted for."""

    public_key: ec.EllipticCurvePublicKey
    issuer: str
    not_before: int
    not_after: int
    status: KeyStatus = KeyStatus.ACTIVE
    kid: bytes = field(init=False)
    alg: int = field(init=False, default=ALG_ES256)

    def __post_init__(self) -> None:
        _check_p256(self.public_key)
        _check_window(self.not_before, self.not_after)
        object.__setattr__(self, "kid", kid_for(self.public_key))

    @property
    def spki_der(self) -> bytes:
        """SubjectPublicKeyInfo DER of the key (what the trust list carries)."""
        return spki_der(self.public_key)

    @classmethod
    def from_spki_der(
        cls,
        der: bytes,
        *,
        issuer: str,
        not_before: int,
        not_after: int,
        status: KeyStatus = KeyStatus.ACTIVE,
    ) -> VerifierKey:
        """Load a public key from SubjectPublicKeyInfo DER; raise ``ValueError`` if not P-256."""
        key = serialization.load_der_public_key(der)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("health-code keys are P-256 (ES256)")
        return cls(key, issuer, not_before, not_after, status)

    @classmethod
    def from_pem(
        cls,
        pem: bytes,
        *,
        issuer: str,
        not_before: int,
        not_after: int,
        status: KeyStatus = KeyStatus.ACTIVE,
    ) -> VerifierKey:
        """Load a public key from a PEM ``PUBLIC KEY`` block."""
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("health-code keys are P-256 (ES256)")
        return cls(key, issuer, not_before, not_after, status)

    def public_pem(self) -> bytes:
        """The public key as a PEM ``PUBLIC KEY`` block."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def with_status(self, status: KeyStatus) -> VerifierKey:
        """A copy with another status."""
        return VerifierKey(self.public_key, self.issuer, self.not_before, self.not_after, status)

    def covers(self, issued_at: int, skew: int = 0) -> bool:
        """Whether a code issued at ``issued_at`` falls inside this key's signing window."""
        return self.not_before - skew <= issued_at <= self.not_after + skew


@dataclass(frozen=True, slots=True)
class IssuerKey:
    """A private signing key with its issuer, signing window and status.

    Storing the private key (encrypted at rest) is the caller's job; :meth:`private_pem` and
    :meth:`private_der` serialise it, encrypted when a password is given.
    """

    private_key: ec.EllipticCurvePrivateKey
    issuer: str
    not_before: int
    not_after: int
    status: KeyStatus = KeyStatus.ACTIVE
    kid: bytes = field(init=False)
    public: VerifierKey = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_p256(self.private_key)
        _check_window(self.not_before, self.not_after)
        public = VerifierKey(
            self.private_key.public_key(),
            self.issuer,
            self.not_before,
            self.not_after,
            self.status,
        )
        object.__setattr__(self, "public", public)
        object.__setattr__(self, "kid", public.kid)

    @classmethod
    def generate(
        cls, issuer: str, *, not_before: int, not_after: int, status: KeyStatus = KeyStatus.ACTIVE
    ) -> IssuerKey:
        """A new P-256 key for ``issuer`` with the given signing window."""
        return cls(generate_private_key(), issuer, not_before, not_after, status)

    def with_status(self, status: KeyStatus) -> IssuerKey:
        """A copy with another status (e.g. ``RETIRED`` on rotation)."""
        return IssuerKey(self.private_key, self.issuer, self.not_before, self.not_after, status)

    def can_sign_at(self, now: int) -> bool:
        """Whether this key may sign something issued at ``now``."""
        return self.status is KeyStatus.ACTIVE and self.not_before <= now <= self.not_after

    def private_pem(self, password: bytes | None = None) -> bytes:
        """PKCS#8 PEM of the private key, encrypted with ``password`` when given."""
        return _private_bytes(self.private_key, serialization.Encoding.PEM, password)

    def private_der(self, password: bytes | None = None) -> bytes:
        """PKCS#8 DER of the private key, encrypted with ``password`` when given."""
        return _private_bytes(self.private_key, serialization.Encoding.DER, password)

    @classmethod
    def from_pem(
        cls,
        pem: bytes,
        *,
        issuer: str,
        not_before: int,
        not_after: int,
        status: KeyStatus = KeyStatus.ACTIVE,
        password: bytes | None = None,
    ) -> IssuerKey:
        """Load a private key from PKCS#8 (or SEC1) PEM, decrypting with ``password``."""
        key = serialization.load_pem_private_key(pem, password)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("health-code keys are P-256 (ES256)")
        return cls(key, issuer, not_before, not_after, status)

    @classmethod
    def from_der(
        cls,
        der: bytes,
        *,
        issuer: str,
        not_before: int,
        not_after: int,
        status: KeyStatus = KeyStatus.ACTIVE,
        password: bytes | None = None,
    ) -> IssuerKey:
        """Load a private key from PKCS#8 DER, decrypting with ``password``."""
        key = serialization.load_der_private_key(der, password)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("health-code keys are P-256 (ES256)")
        return cls(key, issuer, not_before, not_after, status)


def _private_bytes(
    key: ec.EllipticCurvePrivateKey, encoding: serialization.Encoding, password: bytes | None
) -> bytes:
    algorithm: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, algorithm)


class KeyRing:
    """An immutable set of :class:`VerifierKey` indexed by kid.

    Immutable so that a verifier shared between threads can swap in a new ring in one assignment
    when the trust list changes; :meth:`with_keys` and :meth:`without_kid` return new rings.
    """

    __slots__ = ("_by_kid", "_keys")

    def __init__(self, keys: Iterable[VerifierKey | IssuerKey] = ()) -> None:
        by_kid: dict[bytes, tuple[VerifierKey, ...]] = {}
        ordered: list[VerifierKey] = []
        for item in keys:
            key = item.public if isinstance(item, IssuerKey) else item
            present = by_kid.get(key.kid, ())
            if any(k.spki_der == key.spki_der and k.issuer == key.issuer for k in present):
                raise ValueError("the same key for the same issuer appears twice")
            by_kid[key.kid] = (*present, key)
            ordered.append(key)
        self._by_kid = by_kid
        self._keys = tuple(ordered)

    def get(self, kid: bytes) -> tuple[VerifierKey, ...]:
        """Every key with this kid (usually one, possibly none)."""
        return self._by_kid.get(kid, ())

    def with_keys(self, *keys: VerifierKey | IssuerKey) -> KeyRing:
        """A new ring with these keys added."""
        return KeyRing((*self._keys, *keys))

    def without_kid(self, kid: bytes) -> KeyRing:
        """A new ring without the keys of this kid."""
        return KeyRing(k for k in self._keys if k.kid != kid)

    def prune(self, now: int, max_code_lifetime: int) -> KeyRing:
        """A new ring without keys whose codes have all expired (``not_after + lifetime < now``)."""
        return KeyRing(k for k in self._keys if k.not_after + max_code_lifetime >= now)

    def __iter__(self) -> Iterator[VerifierKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid

    def __repr__(self) -> str:
        return f"KeyRing({len(self._keys)} keys)"
