"""Health codes (DESIGN.md §3): issue, decode, verify, trust lists, QR rendering.

Pure library: no gRPC, no database. A code is ``JKM1:`` + base45(zlib(COSE_Sign1(CWT claims))),
signed ES256 with ``kid`` = SHA-256(SPKI DER)[:8]; see ``docs/adr/0002-health-code-format.md``.

Issuing::

    key = IssuerKey.generate("CN-510400", not_before=t0, not_after=t1)
    issued = CodeIssuer(key).issue(colour=Colour.GREEN, masked_name="张*",
                                   masked_id="5***************12")

Verifying::

    verifier = CodeVerifier(KeyRing([key.public]), revoked=revoked_ctis)
    try:
        verified = verifier.verify(issued.code)
    except CodeRejected as rejected:
        rejected.reason  # e.g. "CODE_EXPIRED"
"""

from healthcode.codes.claims import CodeKind, Colour, HealthCodeClaims
from healthcode.codes.envelope import MAX_CODE_LENGTH, MAX_INFLATED_BYTES, PREFIX
from healthcode.codes.errors import (
    BadBase45,
    BadCose,
    BadPrefix,
    BadSignature,
    BadZlib,
    CodeExpired,
    CodeNotYetValid,
    CodeRejected,
    CodeRevoked,
    Rejection,
    TrustListRejected,
    UnknownKid,
    UnsupportedAlgorithm,
)
from healthcode.codes.issuing import (
    DYNAMIC_TTL,
    MAX_CODE_LIFETIME,
    PRINTED_TTL,
    CodeIssuer,
    IssuedCode,
    encode_code,
)
from healthcode.codes.keys import (
    ALG_ES256,
    IssuerKey,
    KeyRing,
    KeyStatus,
    VerifierKey,
    generate_private_key,
    kid_for,
    spki_der,
)
from healthcode.codes.qr import is_qr_alphanumeric, make_qr, render_png, render_svg
from healthcode.codes.trustlist import (
    RevocationList,
    TrustList,
    sign_revocation_list,
    sign_trust_list,
    verify_revocation_list,
    verify_trust_list,
)
from healthcode.codes.verification import (
    DEFAULT_CLOCK_SKEW,
    CodeVerifier,
    DecodedCode,
    VerifiedCode,
    decode_code,
    verify_code,
)

__all__ = [
    "ALG_ES256",
    "DEFAULT_CLOCK_SKEW",
    "DYNAMIC_TTL",
    "MAX_CODE_LENGTH",
    "MAX_CODE_LIFETIME",
    "MAX_INFLATED_BYTES",
    "PREFIX",
    "PRINTED_TTL",
    "BadBase45",
    "BadCose",
    "BadPrefix",
    "BadSignature",
    "BadZlib",
    "CodeExpired",
    "CodeIssuer",
    "CodeKind",
    "CodeNotYetValid",
    "CodeRejected",
    "CodeRevoked",
    "CodeVerifier",
    "Colour",
    "DecodedCode",
    "HealthCodeClaims",
    "IssuedCode",
    "IssuerKey",
    "KeyRing",
    "KeyStatus",
    "Rejection",
    "RevocationList",
    "TrustList",
    "TrustListRejected",
    "UnknownKid",
    "UnsupportedAlgorithm",
    "VerifiedCode",
    "VerifierKey",
    "decode_code",
    "encode_code",
    "generate_private_key",
    "is_qr_alphanumeric",
    "kid_for",
    "make_qr",
    "render_png",
    "render_svg",
    "sign_revocation_list",
    "sign_trust_list",
    "spki_der",
    "verify_code",
    "verify_revocation_list",
    "verify_trust_list",
]
