"""Health-code throughput against the raw ES256 operations of ``cryptography``, same run.

Prints, per second: raw ES256 verify (DER signature over a Sig_structure of the same size as a
real code's), full decode + verify of real codes (``CodeVerifier.verify_many``: base45, zlib,
COSE, claims, kid lookup, signature, times, revocation), and the ratio (target >= 0.7). Then the
same for issuing against raw ES256 signing. Rounds alternate between baseline and candidate and
the best round of each counts (medians printed too), so that load from other processes hits both
alike.

    PYTHONPATH=src python bench/codes_bench.py [--codes 500] [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from healthcode.codes import CodeIssuer, CodeVerifier, Colour, IssuerKey, KeyRing, cose, envelope

NOW = 1_700_000_000


def rate(fn: Callable[[], int], results: list[float]) -> None:
    start = time.perf_counter()
    count = fn()
    results.append(count / (time.perf_counter() - start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    key = IssuerKey.generate("CN-510400", not_before=NOW - 86400, not_after=NOW + 86400)
    # A second, unrelated key in the ring, as in production after a rotation.
    old = IssuerKey.generate("CN-510400", not_before=NOW - 90 * 86400, not_after=NOW - 86400)
    issuer = CodeIssuer(key)
    codes = [
        issuer.issue(
            colour=Colour.GREEN, masked_name="张*", masked_id="5***************12", now=NOW
        ).code
        for _ in range(args.codes)
    ]
    verifier = CodeVerifier(KeyRing([key, old]), revoked=frozenset({b"\x00" * 16}))

    # Baseline inputs: the exact bytes ES256 covers in a real code, DER signatures.
    parsed = [cose.parse_sign1(envelope.unwrap(c)) for c in codes]
    messages = [cose.sig_structure(p.protected, p.payload) for p in parsed]
    der_sigs = [cose.raw_to_der(p.signature) for p in parsed]
    public = key.private_key.public_key()
    ecdsa = ec.ECDSA(hashes.SHA256())

    def raw_verify() -> int:
        verify = public.verify
        for msg, sig in zip(messages, der_sigs, strict=True):
            verify(sig, msg, ecdsa)
        return len(messages)

    def full_verify() -> int:
        results = verifier.verify_many(codes, now=NOW + 10)
        assert all(not isinstance(r, Exception) for r in results)
        return len(results)

    def raw_sign() -> int:
        sign = key.private_key.sign
        for msg in messages:
            sign(msg, ecdsa)
        return len(messages)

    def full_issue() -> int:
        issue = issuer.issue
        for _ in range(len(messages)):
            issue(colour=Colour.GREEN, masked_name="张*", masked_id="5***************12", now=NOW)
        return len(messages)

    print(
        f"code length {len(codes[0])} chars, Sig_structure {len(messages[0])} bytes, "
        f"{args.codes} codes x {args.rounds} rounds"
    )
    for label, baseline, candidate in (
        ("verify", raw_verify, full_verify),
        ("issue", raw_sign, full_issue),
    ):
        base: list[float] = []
        cand: list[float] = []
        for _ in range(args.rounds):
            rate(baseline, base)
            rate(candidate, cand)
        b, c = max(base), max(cand)
        bm, cm = statistics.median(base), statistics.median(cand)
        print(
            f"{label}: raw ES256 {b:,.0f}/s  full code {c:,.0f}/s  ratio {c / b:.3f} (best); "
            f"medians {bm:,.0f}/s {cm:,.0f}/s ratio {cm / bm:.3f}"
        )


if __name__ == "__main__":
    main()
