"""``healthcode vault ...``: run the vault and the operator commands.

- ``healthcode vault`` / ``healthcode vault serve``: run the server (foreground, Ctrl-C stops).
- ``healthcode vault audit verify``: check the hash chain, signatures and roots; names every
  modified, deleted, inserted or reordered event. ``--file export.jsonl --public-key key.pem``
  checks an export offline, trusting only the given key.
- ``healthcode vault audit export --output FILE``: JSON Lines for an offline auditor;
  ``healthcode vault audit public-key`` prints the key auditors should pin.
- ``healthcode vault keys status|rotate|rewrap``: key-encryption key versions.
- ``healthcode vault credentials create --role ROLE --name NAME [--output FILE]`` and ``revoke``.

Operator commands work on the database and key backend directly (with the same settings as the
server), so they also work while the server is down; they are audited as ``cli:<user>``.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from healthcode.vault.settings import VaultSettings

vault_app = typer.Typer(
    name="vault",
    help="The privacy vault: tokenization, purpose-bound access, audit.",
    invoke_without_command=True,
    no_args_is_help=False,
)
audit_app = typer.Typer(help="Audit log: verify, export (security officers).")
keys_app = typer.Typer(help="Key-encryption key versions: status, rotate, rewrap.")
credentials_app = typer.Typer(help="Service credentials of vault callers.")
vault_app.add_typer(audit_app, name="audit")
vault_app.add_typer(keys_app, name="keys")
vault_app.add_typer(credentials_app, name="credentials")

ListenOpt = Annotated[
    str | None, typer.Option("--listen", help="host:port (default 127.0.0.1:50052)")
]
BackendOpt = Annotated[str | None, typer.Option("--backend", help="local or transit")]


def _settings(listen: str | None = None, backend: str | None = None) -> VaultSettings:
    overrides: dict[str, object] = {}
    if listen:
        overrides["listen"] = listen
    if backend:
        overrides["backend"] = backend
    return VaultSettings(**overrides)  # type: ignore[arg-type]


@vault_app.callback()
def main(ctx: typer.Context, listen: ListenOpt = None, backend: BackendOpt = None) -> None:
    """Run the vault when no subcommand is given."""
    if ctx.invoked_subcommand is None:
        from healthcode.vault.server import serve

        serve(_settings(listen, backend))


@vault_app.command("serve")
def serve_cmd(listen: ListenOpt = None, backend: BackendOpt = None) -> None:
    """Run the vault gRPC server in the foreground until Ctrl-C or SIGTERM."""
    from healthcode.vault.server import serve

    serve(_settings(listen, backend))


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli:unknown"


def _core(settings: VaultSettings):  # type: ignore[no-untyped-def]
    from healthcode.vault.audit import AuditLog
    from healthcode.vault.core import VaultCore
    from healthcode.vault.dek_cache import DekCache
    from healthcode.vault.policy import PolicyStore
    from healthcode.vault.server import open_components

    engine, backend, signer = open_components(settings, startup_timeout=5.0)
    return VaultCore(
        engine,
        backend,
        PolicyStore(settings.effective_policy_file),
        AuditLog(signer),
        cache=DekCache(0, 0),
    )


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@audit_app.command("verify")
def audit_verify(
    file: Annotated[Path | None, typer.Option(help="Verify an export file offline.")] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(help="Trusted public key (PEM or base64 raw); required with --file."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Verify the audit log; exit status 1 and a list of findings when it was tampered with."""
    from healthcode.vault import audit

    keys = None
    if public_key is not None:
        key = audit.load_public_key(public_key.read_text(encoding="utf-8"))
        keys = {audit.key_id_of(key): key}
    if file is not None:
        if keys is None:
            _fail("--public-key is required to verify an export offline")
            return
        with file.open(encoding="utf-8") as handle:
            events, roots = audit.parse_export(handle)
        report = audit.verify_chain(events, roots, keys)
    else:
        from healthcode.vault.db import create_vault_engine, migrate

        settings = VaultSettings()
        engine = create_vault_engine(settings.effective_database_url)
        migrate(engine)
        report = audit.verify_database(engine, keys)
        engine.dispose()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "events": report.event_count,
                    "roots": report.root_count,
                    "unrooted": report.unrooted,
                    "findings": [
                        {
                            "kind": f.kind.value,
                            "sequence": f.seq,
                            "last_sequence": f.last_seq,
                            "row_id": f.row_id,
                            "description": f.description,
                        }
                        for f in report.findings
                    ],
                },
                indent=2,
            )
        )
    else:
        for finding in report.findings:
            typer.echo(f"{finding.kind.value:12} {finding.description}")
        latest = report.latest_root.seq if report.latest_root else 0
        typer.echo(
            f"{report.event_count} events, {report.root_count} signed roots "
            f"(latest covers event {latest}, {report.unrooted} after it): "
            + ("OK" if report.ok else f"{len(report.findings)} problem(s)")
        )
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    output: Annotated[
        Path, typer.Option(help="Where to write the JSON Lines export ('-' = stdout).")
    ],
    start_sequence: Annotated[int, typer.Option(help="First event to export.")] = 0,
) -> None:
    """Export events, signed roots and the public key for an offline auditor."""
    from healthcode.vault import audit
    from healthcode.vault.db import create_vault_engine, migrate

    settings = VaultSettings()
    engine = create_vault_engine(settings.effective_database_url)
    migrate(engine)
    lines = audit.export_lines(engine, start_sequence)
    if str(output) == "-":
        for line in lines:
            sys.stdout.write(line + "\n")
    else:
        with output.open("w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line + "\n")
        typer.echo(f"exported to {output}")
    engine.dispose()


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the audit signing public key (PEM) for auditors to pin."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from healthcode.vault import audit
    from healthcode.vault.db import create_vault_engine, migrate

    settings = VaultSettings()
    engine = create_vault_engine(settings.effective_database_url)
    migrate(engine)
    with engine.connect() as conn:
        keys = audit.stored_public_keys(conn)
    engine.dispose()
    if not keys:
        _fail("no audit signing key yet: start the vault once")
    for key_id, key in keys.items():
        typer.echo(f"# key id {key_id}")
        typer.echo(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode())


@keys_app.command("status")
def keys_status() -> None:
    """Show KEK versions and how many data keys use older ones."""
    core = _core(VaultSettings())
    status = core.backend.status()
    outdated = core._outdated(status.current_version)
    typer.echo(
        f"backend {core.backend.name}: current version {status.current_version}, "
        f"min decryption version {status.min_decryption_version}, "
        f"{outdated} data keys on older versions"
    )
    core.engine.dispose()


@keys_app.command("rotate")
def keys_rotate(
    reference: Annotated[str, typer.Option(help="Change ticket reference.")] = "",
) -> None:
    """Create a new key-encryption key version."""
    from healthcode.vault.auth import Caller, Role

    core = _core(VaultSettings())
    version, outdated = core.rotate(Caller(_operator(), Role.KEY_ADMIN), reference)
    typer.echo(f"current version {version}; {outdated} data keys to rewrap")
    core.engine.dispose()


@keys_app.command("rewrap")
def keys_rewrap(
    limit: Annotated[int, typer.Option(help="At most this many data keys (0 = all).")] = 0,
    retire: Annotated[
        bool, typer.Option(help="Retire older versions when nothing uses them.")
    ] = False,
) -> None:
    """Re-wrap data keys with the current key-encryption key version."""
    from healthcode.vault.auth import Caller, Role

    core = _core(VaultSettings())
    result = core.rewrap(Caller(_operator(), Role.KEY_ADMIN), limit, retire)
    typer.echo(
        f"rewrapped {result.rewrapped}, remaining {result.remaining}, current version "
        f"{result.current_version}, min decryption version {result.min_decryption_version}"
    )
    core.engine.dispose()


@credentials_app.command("create")
def credentials_create(
    role: Annotated[str, typer.Option(help="platform, security_officer or key_admin")],
    name: Annotated[str, typer.Option(help="Caller name shown in the audit log.")],
    output: Annotated[
        Path | None, typer.Option(help="Write to this file (0600) instead of printing.")
    ] = None,
) -> None:
    """Create a credential; it is shown (or written) once and stored only hashed."""
    from healthcode.vault.auth import Role, create_credential, write_credential_file
    from healthcode.vault.db import create_vault_engine, migrate

    try:
        parsed = Role(role)
    except ValueError:
        _fail(f"unknown role {role!r}; use one of {', '.join(r.value for r in Role)}")
        return
    if not name or len(name) > 64 or not name.isprintable():
        _fail("--name must be 1-64 printable characters")
    settings = VaultSettings()
    engine = create_vault_engine(settings.effective_database_url)
    migrate(engine)
    credential = create_credential(engine, name, parsed)
    engine.dispose()
    if output is not None:
        write_credential_file(output, credential)
        typer.echo(f"credential for {name} ({parsed.value}) written to {output}")
    else:
        typer.echo(credential)


@credentials_app.command("revoke")
def credentials_revoke(
    name: Annotated[str | None, typer.Option(help="Revoke every credential of this name.")] = None,
    credential_id: Annotated[
        str | None, typer.Option("--id", help="Revoke one credential.")
    ] = None,
) -> None:
    """Revoke credentials (effective within a few seconds on running servers)."""
    from healthcode.vault.auth import revoke_credentials
    from healthcode.vault.db import create_vault_engine, migrate

    if name is None and credential_id is None:
        _fail("give --name or --id")
    settings = VaultSettings()
    engine = create_vault_engine(settings.effective_database_url)
    migrate(engine)
    count = revoke_credentials(engine, name=name, cred_id=credential_id)
    engine.dispose()
    typer.echo(f"revoked {count} credential(s)")
