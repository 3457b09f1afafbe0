"""The ``healthcode`` command: run the stack, the server, the vault, and administer them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console

from healthcode.common.logging import configure

app = typer.Typer(
    help="Health code (健康码) platform: server, privacy vault and tools.",
    no_args_is_help=True,
    add_completion=False,
)
admin_app = typer.Typer(
    help="Administration: create the first health-authority account.", no_args_is_help=True
)
certs_app = typer.Typer(help="Development certificates for TLS and mTLS.", no_args_is_help=True)
db_app = typer.Typer(help="Server database migrations.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
app.add_typer(certs_app, name="certs")
app.add_typer(db_app, name="db")

console = Console(stderr=True)

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", envvar="HEALTHCODE_HOME", help="Data directory (HEALTHCODE_HOME)."),
]


def _mount_vault() -> None:
    from healthcode.vault.cli import vault_app

    app.add_typer(vault_app, name="vault", help="The privacy vault and its audit tools.")


_mount_vault()


def _home(home: Path | None) -> Path:
    resolved = home or Path(os.environ.get("HEALTHCODE_HOME") or Path.home() / ".healthcode")
    resolved = resolved.expanduser().resolve()
    os.environ["HEALTHCODE_HOME"] = str(resolved)
    resolved.mkdir(parents=True, exist_ok=True)
    return resolved


def _run_until_signal() -> asyncio.Event:
    """An event set on SIGINT/SIGTERM in the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


@app.command()
def server(
    home: HomeOption = None,
    listen: Annotated[str | None, typer.Option(help="host:port (HEALTHCODE_LISTEN).")] = None,
) -> None:
    """Run the platform gRPC server in the foreground."""
    from healthcode.server.app import serve
    from healthcode.server.settings import ServerSettings

    _home(home)
    settings = ServerSettings(listen=listen) if listen else ServerSettings()
    configure("server", level=settings.log_level, home=settings.home)

    async def main() -> None:
        stop = _run_until_signal()
        await serve(settings, stop=stop, freeze_heap=True)

    asyncio.run(main())


def _wait_healthy(target: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"process for {target} exited with code {proc.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{target} did not become healthy in {timeout:.0f} s")


def _stop(procs: list[subprocess.Popen[bytes]]) -> int:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    code = 0
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
            code = proc.returncode or 1
    return code


@app.command()
def up(
    home: HomeOption = None,
    server_listen: Annotated[str, typer.Option(help="Server address.")] = "127.0.0.1:50051",
    vault_listen: Annotated[str, typer.Option(help="Vault address.")] = "127.0.0.1:50052",
    demo: Annotated[bool, typer.Option(help="Seed the demo city on first start.")] = True,
) -> None:
    """Run vault and server on the embedded defaults; prints `healthcode ready` once both serve."""
    data = _home(home)
    configure("up", home=data)
    env = {**os.environ, "HEALTHCODE_HOME": str(data)}
    env["HEALTHCODE_VAULT_LISTEN"] = vault_listen
    env["HEALTHCODE_LISTEN"] = server_listen
    env["HEALTHCODE_PRIVACY_VAULT_ADDRESS"] = vault_listen
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        vault_proc = subprocess.Popen(
            [sys.executable, "-m", "healthcode", "vault", "serve"], env=env, start_new_session=True
        )
        procs.append(vault_proc)
        _wait_healthy(vault_listen, vault_proc)
        if demo:
            from healthcode.demo import seed_demo

            summary = seed_demo(data, vault_address=vault_listen)
            if summary:
                console.print(f"demo city seeded; accounts and device token in {summary}")
        server_proc = subprocess.Popen(
            [sys.executable, "-m", "healthcode", "server"], env=env, start_new_session=True
        )
        procs.append(server_proc)
        _wait_healthy(server_listen, server_proc)
    except (RuntimeError, KeyboardInterrupt) as exc:
        console.print(f"start-up failed: {exc}")
        raise typer.Exit(_stop(procs) or 1) from exc
    print("healthcode ready", flush=True)
    while not stopping:
        for proc in procs:
            if proc.poll() is not None:
                console.print(f"a process exited unexpectedly (code {proc.returncode}); stopping")
                stopping = True
        time.sleep(0.2)
    code = _stop(procs)
    console.print("healthcode stopped")
    raise typer.Exit(code)


@db_app.command("upgrade")
def db_upgrade(home: HomeOption = None) -> None:
    """Apply the server's database migrations (HEALTHCODE_DATABASE_URL or the embedded SQLite)."""
    from healthcode.server.db.migrate import upgrade
    from healthcode.server.settings import ServerSettings

    _home(home)
    settings = ServerSettings()
    settings.server_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    console.print("server database is up to date")


@admin_app.command("bootstrap")
def admin_bootstrap(
    phone: Annotated[str, typer.Option(help="Mobile number of the first official.")],
    name: Annotated[str, typer.Option(help="Display name shown on decisions.")],
    home: HomeOption = None,
) -> None:
    """Create the first health-authority account (the vault must be running)."""
    from healthcode.server.app import build_platform
    from healthcode.server.auth.bootstrap import bootstrap_admin
    from healthcode.server.settings import ServerSettings

    _home(home)
    settings = ServerSettings()

    async def main() -> str:
        platform = await build_platform(settings)
        try:
            return await bootstrap_admin(platform, phone, name)
        finally:
            await platform.vault.close()
            platform.db.close()

    account_id = asyncio.run(main())
    console.print(f"created health authority account {account_id}")


@certs_app.command("dev")
def certs_dev(
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default $HEALTHCODE_HOME/certs).")
    ] = None,
    host: Annotated[list[str] | None, typer.Option(help="Server host names / IPs.")] = None,
    home: HomeOption = None,
) -> None:
    """Create a development CA and certificates for server, vault, the vault link and a device."""
    from healthcode.common.certs import create_dev_pki

    target = out or _home(home) / "certs"
    issued = create_dev_pki(target, hosts=host or None)
    console.print(
        json.dumps(
            {k: {"cert": str(v.cert), "key": str(v.key)} for k, v in issued.items()}, indent=2
        )
    )


if __name__ == "__main__":  # pragma: no cover
    app()
