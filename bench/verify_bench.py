"""VerifyCode (with passage write) against a bare gRPC echo service, and BatchVerifyCodes against
raw ES256 verification, all in one run.

A child process hosts, on 127.0.0.1 only: a real vault, the real platform server (interceptors,
auth, VerificationService over SQLite or PostgreSQL) and a bare ``grpc.aio`` echo service that
takes a ``VerifyCodeRequest`` and answers a pre-built ``VerifyCodeResponse`` of the same size as
the real one. This process is the client: one asyncio loop, ``--callers`` concurrent callers,
each phase runs ``--seconds``. Rounds alternate echo / floor / VerifyCode / batch / raw so that
load from other processes hits every side alike; the best round of each counts (medians printed
too).

The floor is a second bare service whose handler only decodes and verifies the code (the
server's own ``CodeVerifier``: base45, zlib, COSE, ES256) before answering like the echo: no
interceptors, no authentication, no database. It is the ceiling for any VerifyCode on the
machine the run is on, so its ratio to echo says how much of the gap is the signature check
itself (on a 2-core machine shared by client and server it lands near 0.5x; ADR 0005).

Targets: VerifyCode rps >= 0.6x echo, VerifyCode p99 <= 2x echo p99; BatchVerifyCodes codes/s >=
0.7x raw ES256 verify/s (``cryptography``, one thread, same run). Every VerifyCode carries a new
request id (a new passage each), codes cycle over ``--codes`` distinct codes and the server keeps
no verification-result cache, so every call checks a signature and writes a passage. Each report
line gives best / median; ratios are best-vs-best and the median of per-round ratios; CPU per call
of the server process and of the client is printed to show where the time goes.

    python bench/verify_bench.py --db sqlite
    python bench/verify_bench.py --db postgresql [--pg-url postgresql+psycopg://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from healthcode_sdk._gen.healthcode.v1 import verification_service_pb2 as ver_pb
from healthcode_sdk._gen.healthcode.v1 import verification_service_pb2_grpc as ver_grpc

ECHO_METHOD = "/bench.v1.Echo/Echo"
FLOOR_METHOD = "/bench.v1.Floor/Check"


# ------------------------------------------------------------------------------------------------
# Child: servers and seed data


def _echo_response() -> ver_pb.VerifyCodeResponse:
    from google.protobuf.timestamp_pb2 import Timestamp

    expire = Timestamp(seconds=int(time.time()) + 300)
    return ver_pb.VerifyCodeResponse(
        color=1,
        signed_color=1,
        kind=1,
        decision=1,
        passage_id="0" * 32,
        expire_time=expire,
        identity={"masked_name": "张*", "masked_id_number": "5***************12"},
    )


async def _bare_server(method: str, handler: Any) -> tuple[grpc.aio.Server, int]:
    """A started ``grpc.aio`` server on 127.0.0.1 with one unary method (``/service/name``)
    taking a VerifyCodeRequest and answering a VerifyCodeResponse: no interceptors."""
    _, service, name = method.split("/")
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                service,
                {
                    name: grpc.unary_unary_rpc_method_handler(
                        handler,
                        request_deserializer=ver_pb.VerifyCodeRequest.FromString,
                        response_serializer=ver_pb.VerifyCodeResponse.SerializeToString,
                    ),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _serve(db_kind: str, pg_url: str, persons: int, codes: int) -> None:
    from pydantic import SecretStr

    from healthcode.codes import CodeKind, Colour
    from healthcode.common.logging import configure
    from healthcode.common.runtime import freeze_startup_heap
    from healthcode.server.app import SERVICES, build_platform, build_server
    from healthcode.server.auth.sessions import create_login_session
    from healthcode.server.codes.store import remember_code
    from healthcode.server.db.base import new_id, utcnow
    from healthcode.server.db.models import Account, Checkpoint, Person
    from healthcode.server.settings import ServerSettings
    from healthcode.vault.auth import read_credential_file
    from healthcode.vault.client import TokenizeItem
    from healthcode.vault.fields import FieldType
    from healthcode.vault.server import VaultServer
    from healthcode.vault.settings import VaultSettings
    from tests.fixtures import people

    configure("server", level="INFO")  # as `healthcode server` runs (the access log is DEBUG)
    if os.environ.get("BENCH_SWITCH"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH"]))
    home = Path(tempfile.mkdtemp(prefix="verify-bench-"))
    dropper = None
    if db_kind == "sqlite":
        database_url = f"sqlite:///{home / 'server.sqlite3'}"
    else:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"bench_{secrets.token_hex(4)}"
        admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        database_url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)

        def dropper() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    vault_settings = VaultSettings(home=home / "vaulthome", listen="127.0.0.1:0")
    vault = VaultServer(vault_settings)
    vault_port = await vault.start()
    credential = read_credential_file(vault_settings.platform_credential_file)
    settings = ServerSettings(
        home=home,
        database_url=database_url,
        listen="127.0.0.1:0",
        privacy_vault_address=f"127.0.0.1:{vault_port}",
        privacy_vault_credential=SecretStr(credential),
        dynamic_code_seconds=3600,
        log_level="WARNING",
    )
    platform = await build_platform(settings)  # as `healthcode server` builds it
    db, vault_client = platform.db, platform.vault

    # Seed: persons (through the vault), a checkpoint with a staff account, a provincial account.
    records = [people.person() for _ in range(persons)]
    ids = [new_id() for _ in records]
    items = []
    for record, pid in zip(records, ids, strict=True):
        items += [
            TokenizeItem(FieldType.ID_NUMBER, record.id_number, pid),
            TokenizeItem(FieldType.NAME, record.name, pid),
        ]
    tokens = await vault_client.tokenize(items)
    issuer = await platform.keys.signer()

    def seed(session: Any) -> dict[str, Any]:
        for i, pid in enumerate(ids):
            session.add(
                Person(
                    id=pid,
                    id_token=tokens[2 * i].token,
                    name_token=tokens[2 * i + 1].token,
                    id_type="RESIDENT",
                    masked_name=tokens[2 * i + 1].masked,
                    masked_id_number=tokens[2 * i].masked,
                    division_code="510402",
                    color=1,
                )
            )
        checkpoint = Checkpoint(id=new_id(), name="bench", division_code="510402")
        session.add(checkpoint)
        session.flush()
        staff = Account(
            id=new_id(), role="staff", checkpoint_id=checkpoint.id, division_code="510402"
        )
        provincial = Account(id=new_id(), role="provincial")
        session.add_all([staff, provincial])
        session.flush()
        now = utcnow()
        issued = []
        for n in range(codes):
            person = session.get(Person, ids[n % len(ids)])
            code = issuer.issue(
                colour=Colour.GREEN,
                masked_name=person.masked_name,
                masked_id=person.masked_id_number,
                kind=CodeKind.DYNAMIC,
            )
            remember_code(
                session, code.claims, person_id=person.id, kid=issuer.key.kid, issued_by=staff.id
            )
            issued.append(code.code)
        return {
            "staff": create_login_session(
                session, staff.id, settings=settings, now=now
            ).access_token,
            "provincial": create_login_session(
                session, provincial.id, settings=settings, now=now
            ).access_token,
            "codes": issued,
        }

    seeded = await db.run(seed)
    mine = tuple(
        s
        for s in SERVICES
        if s[2]
        in (
            "healthcode.v1.CodeService",
            "healthcode.v1.VerificationService",
            "healthcode.v1.CheckpointService",
        )
    )
    server, _ = build_server(platform, services=mine)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    response = _echo_response()

    async def echo_handler(request: ver_pb.VerifyCodeRequest, context: Any) -> Any:
        return response

    # The floor: a bare service (no interceptors, no auth, no database) that only decodes and
    # verifies the code with the server's own verifier, then answers like the echo. No
    # VerifyCode can be faster than this on the same machine.
    verifier = (await platform.keys.snapshot()).verifier

    async def floor_handler(request: ver_pb.VerifyCodeRequest, context: Any) -> Any:
        verifier.verify(request.code)
        return response

    echo, echo_port = await _bare_server(ECHO_METHOD, echo_handler)
    floor, floor_port = await _bare_server(FLOOR_METHOD, floor_handler)
    freeze_startup_heap()  # as `healthcode server` does once it serves
    print(
        json.dumps({"port": port, "echo_port": echo_port, "floor_port": floor_port, **seeded}),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    await floor.stop(None)
    await echo.stop(None)
    await server.stop(None)
    await vault_client.close()
    db.close()
    await vault.stop()
    if dropper is not None:
        dropper()


# ------------------------------------------------------------------------------------------------
# Client


@dataclass
class Phase:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    #: CPU seconds per completed call of the server process and of this (client) process.
    server_cpu_us: float = 0.0
    client_cpu_us: float = 0.0


_SERVER = {"pid": 0}
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _server_cpu() -> float:
    """User + system CPU seconds of the server process so far (Linux; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{_SERVER['pid']}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _client_cpu() -> float:
    times = os.times()
    return times.user + times.system


async def _run_phase(call: Any, make_request: Any, callers: int, seconds: float) -> Phase:
    server_cpu, client_cpu = _server_cpu(), _client_cpu()
    phase = await _measure(call, make_request, callers, seconds)
    done = max(1.0, phase.rps * seconds)
    phase.server_cpu_us = (_server_cpu() - server_cpu) / done * 1e6
    phase.client_cpu_us = (_client_cpu() - client_cpu) / done * 1e6
    return phase


async def _measure(call: Any, make_request: Any, callers: int, seconds: float) -> Phase:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def caller(n: int) -> None:
        nonlocal errors
        i = 0
        while time.perf_counter() < deadline:
            request = make_request(n, i)
            i += 1
            start = time.perf_counter()
            try:
                await call(request)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    begin = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(callers)))
    elapsed = time.perf_counter() - begin
    latencies.sort()
    if not latencies:
        return Phase(0.0, 0.0, 0.0, errors)
    return Phase(
        rps=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        errors=errors,
    )


def _raw_verify_rate(codes: list[str], seconds: float) -> float:
    """ES256 verifications per second with cryptography alone (one thread)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from healthcode.codes import cose, decode_code

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    decoded = decode_code(codes[0])
    data = cose.sig_structure(decoded.message.protected, decoded.message.payload)
    signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    algorithm = ec.ECDSA(hashes.SHA256())
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            public.verify(signature, data, algorithm)
        count += 100
    return count / (time.perf_counter() - start)


async def _client(info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    codes: list[str] = info["codes"]
    staff_md = (("authorization", f"Bearer {info['staff']}"),)
    prov_md = (("authorization", f"Bearer {info['provincial']}"),)
    options = [("grpc.use_local_subchannel_pool", 1)]
    server = grpc.aio.insecure_channel(f"127.0.0.1:{info['port']}", options=options)
    stub = ver_grpc.VerificationServiceStub(server)

    def bare(port: int, method: str) -> tuple[grpc.aio.Channel, Any]:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        call = channel.unary_unary(
            method,
            request_serializer=ver_pb.VerifyCodeRequest.SerializeToString,
            response_deserializer=ver_pb.VerifyCodeResponse.FromString,
        )
        return channel, call

    echo, echo_call = bare(info["echo_port"], ECHO_METHOD)
    floor, floor_call = bare(info["floor_port"], FLOOR_METHOD)
    run_id = secrets.token_hex(3)
    counter = iter(range(10**9))

    def verify_request(n: int, i: int) -> ver_pb.VerifyCodeRequest:
        return ver_pb.VerifyCodeRequest(
            code=codes[(n * 7919 + i) % len(codes)],
            direction=1,
            temperature_celsius=36.5,
            request_id=f"bench-{run_id}-{next(counter)}",
        )

    async def echo_rpc(request: ver_pb.VerifyCodeRequest) -> Any:
        return await echo_call(request)

    async def floor_rpc(request: ver_pb.VerifyCodeRequest) -> Any:
        return await floor_call(request)

    async def verify_rpc(request: ver_pb.VerifyCodeRequest) -> Any:
        return await stub.VerifyCode(request, metadata=staff_md)

    batch = [codes[i % len(codes)] for i in range(args.batch)]
    batch_request = ver_pb.BatchVerifyCodesRequest(codes=batch)

    async def batch_rpc(request: ver_pb.BatchVerifyCodesRequest) -> Any:
        response = await stub.BatchVerifyCodes(request, metadata=prov_md)
        assert all(r.valid for r in response.results)
        return response

    # Warm up both paths (connections, key snapshot, caches, JIT-less but warm allocators).
    await _run_phase(echo_rpc, verify_request, args.callers, 1.0)
    await _run_phase(verify_rpc, verify_request, args.callers, 1.0)
    await _run_phase(batch_rpc, lambda n, i: batch_request, args.batch_callers, 1.0)
    await _run_phase(floor_rpc, verify_request, args.callers, 1.0)
    rounds: dict[str, list[Any]] = {"echo": [], "floor": [], "verify": [], "batch": [], "raw": []}
    none = Phase(1.0, 1.0, 1.0, 0)
    for r in range(args.rounds):
        rounds["echo"].append(
            await _run_phase(echo_rpc, verify_request, args.callers, args.seconds)
            if "echo" in args.phases
            else none
        )
        rounds["floor"].append(
            await _run_phase(floor_rpc, verify_request, args.callers, args.seconds)
            if "floor" in args.phases
            else none
        )
        rounds["verify"].append(
            await _run_phase(verify_rpc, verify_request, args.callers, args.seconds)
            if "verify" in args.phases
            else none
        )
        rounds["batch"].append(
            await _run_phase(
                batch_rpc, lambda n, i: batch_request, args.batch_callers, args.seconds
            )
            if "batch" in args.phases
            else none
        )
        rounds["raw"].append(
            _raw_verify_rate(codes, args.seconds) if "batch" in args.phases else 1.0
        )
        e, f, v = rounds["echo"][-1], rounds["floor"][-1], rounds["verify"][-1]
        print(
            f"round {r + 1}: echo {e.rps:7.0f} rps p99 {e.p99_ms:6.2f} ms "
            f"cpu {e.server_cpu_us:4.0f}+{e.client_cpu_us:4.0f} us | floor {f.rps:7.0f} rps "
            "| verify "
            f"{v.rps:7.0f} rps p99 {v.p99_ms:6.2f} ms "
            f"cpu {v.server_cpu_us:4.0f}+{v.client_cpu_us:4.0f} us | batch "
            f"{rounds['batch'][-1].rps * args.batch:7.0f} codes/s | raw "
            f"{rounds['raw'][-1]:7.0f} verify/s",
            flush=True,
        )
    await server.close()
    await floor.close()
    await echo.close()
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "HEALTHCODE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--batch-callers", type=int, default=2)
    parser.add_argument("--persons", type=int, default=200)
    parser.add_argument("--codes", type=int, default=2000)
    parser.add_argument(
        "--phases",
        default="echo,floor,verify,batch",
        help="comma-separated subset of echo,floor,verify,batch (for profiling)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.callers <= 256 or not 1 <= args.batch <= 500:
        parser.error("--callers must be 1-256 and --batch 1-500")
    if args.serve:
        asyncio.run(_serve(args.db, args.pg_url, args.persons, args.codes))
        return

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--db",
            args.db,
            "--pg-url",
            args.pg_url,
            "--persons",
            str(args.persons),
            "--codes",
            str(args.codes),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=root,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = ""
        while not line.startswith("{"):
            line = child.stdout.readline()
            if not line:
                raise SystemExit("the server process exited during start-up")
        info = json.loads(line)
        _SERVER["pid"] = child.pid
        print(f"server process pid {child.pid}", flush=True)
        # Keep draining the child's log output so that it never blocks on a full pipe.
        threading.Thread(target=child.stdout.read, daemon=True).start()
        rounds = asyncio.run(_client(info, args))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=60)

    _report(args, rounds)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _report(args: argparse.Namespace, rounds: dict[str, list[Any]]) -> None:
    """Best and median rounds, ratios, and a met/MISSED line per target."""
    med = statistics.median
    echo, floor, verify = rounds["echo"], rounds["floor"], rounds["verify"]
    batch = [p.rps * args.batch for p in rounds["batch"]]
    raw: list[float] = rounds["raw"]
    print()
    print(
        f"database: {args.db}; callers: {args.callers}; {args.rounds} alternating rounds of "
        f"{args.seconds:g} s; distinct request ids, {args.codes} distinct codes (no result cache)"
    )
    print("                  rps best / median   p50 ms best / median   p99 ms best / median")
    for name, phases in (("echo", echo), ("sig. floor", floor), ("VerifyCode", verify)):
        print(
            f"  {name:<11} {max(p.rps for p in phases):9.0f} / {med(p.rps for p in phases):6.0f}"
            f"   {min(p.p50_ms for p in phases):9.2f} / {med(p.p50_ms for p in phases):6.2f}"
            f"   {min(p.p99_ms for p in phases):9.2f} / {med(p.p99_ms for p in phases):6.2f}"
            f"   errors {sum(p.errors for p in phases)}"
            f"   cpu/call server {med(p.server_cpu_us for p in phases):4.0f} us"
            f" client {med(p.client_cpu_us for p in phases):4.0f} us"
        )
    # Best: best VerifyCode round against best echo round. Median: the median of the per-round
    # ratios (echo and VerifyCode of one round ran back to back under the same outside load).
    rps_best = max(p.rps for p in verify) / max(p.rps for p in echo)
    rps_med = med(v.rps / e.rps for v, e in zip(verify, echo, strict=True))
    p99_best = min(p.p99_ms for p in verify) / min(p.p99_ms for p in echo)
    p99_med = med(v.p99_ms / e.p99_ms for v, e in zip(verify, echo, strict=True))
    floor_best = max(p.rps for p in floor) / max(p.rps for p in echo)
    floor_med = med(f.rps / e.rps for f, e in zip(floor, echo, strict=True))
    batch_best = max(batch) / max(raw)
    batch_med = med(b / r for b, r in zip(batch, raw, strict=True))
    print(
        f"  BatchVerifyCodes {max(batch):8.0f} / {med(batch):6.0f} codes/s   raw ES256 verify "
        f"{max(raw):8.0f} / {med(raw):6.0f} per s (cryptography, one thread)"
    )
    print("ratios (best / median of per-round ratios) and targets:")
    print(
        f"  VerifyCode/echo rps   {rps_best:5.2f} / {rps_med:5.2f}   target >= 0.60  "
        f"best {_verdict(rps_best >= 0.6)}, median {_verdict(rps_med >= 0.6)}"
    )
    print(
        f"  floor/echo rps        {floor_best:5.2f} / {floor_med:5.2f}   (no target: the ceiling "
        "for any VerifyCode on this machine; decode + ES256 only, no auth, no database)"
    )
    print(
        f"  VerifyCode/echo p99   {p99_best:5.2f} / {p99_med:5.2f}   target <= 2.00  "
        f"best {_verdict(p99_best <= 2.0)}, median {_verdict(p99_med <= 2.0)}"
    )
    print(
        f"  Batch/raw ES256       {batch_best:5.2f} / {batch_med:5.2f}   target >= 0.70  "
        f"best {_verdict(batch_best >= 0.7)}, median {_verdict(batch_med >= 0.7)}"
    )


if __name__ == "__main__":
    main()
