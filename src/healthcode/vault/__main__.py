"""``python -m healthcode.vault`` = ``healthcode vault`` (used when running the vault as a subprocess)."""

from healthcode.vault.cli import vault_app

vault_app(prog_name="healthcode vault")
