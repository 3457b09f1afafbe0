"""Pin the public surface of healthcode.codes: changing it is a deliberate act."""

import healthcode.codes as codes

EXPECTED = {
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
}


def test_all_is_pinned() -> None:
    assert set(codes.__all__) == EXPECTED
    assert len(codes.__all__) == len(EXPECTED)


def test_every_export_exists_and_is_defined_in_the_package() -> None:
    for name in codes.__all__:
        value = getattr(codes, name)
        if isinstance(value, type) or callable(value):
            assert value.__module__.startswith("healthcode.codes"), name


def test_rejection_reasons_are_stable() -> None:
    assert [r.value for r in codes.Rejection] == [
        "CODE_BAD_PREFIX",
        "CODE_BAD_BASE45",
        "CODE_BAD_ZLIB",
        "CODE_BAD_COSE",
        "CODE_UNSUPPORTED_ALG",
        "CODE_UNKNOWN_KID",
        "CODE_BAD_SIGNATURE",
        "CODE_EXPIRED",
        "CODE_NOT_YET_VALID",
        "CODE_REVOKED",
    ]
    classes = {cls.rejection for cls in codes.CodeRejected.__subclasses__()}
    assert classes == set(codes.Rejection)
