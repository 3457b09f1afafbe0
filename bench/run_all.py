"""Run every benchmark in turn (``make bench``); each prints its own ratios and target lines.

    python bench/run_all.py [--only TEXT]

Each benchmark measures its baseline in the same run (these machines are noisy), so ratios are
comparable across machines while absolute numbers are not.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNS: list[tuple[str, list[str]]] = [
    ("health code format: decode+verify vs raw ES256", ["codes_bench.py"]),
    ("VerifyCode vs bare gRPC echo (SQLite)", ["verify_bench.py", "--db", "sqlite"]),
    ("VerifyCode vs bare gRPC echo (PostgreSQL)", ["verify_bench.py", "--db", "postgresql"]),
    ("vault vs raw OpenBao transit", ["vault_bench.py"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run only benchmarks whose title contains this text")
    args = parser.parse_args()
    failed = 0
    for title, argv in RUNS:
        if args.only and args.only.lower() not in title.lower():
            continue
        print(f"\n=== {title} ===", flush=True)
        done = subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]], check=False)
        failed += done.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
