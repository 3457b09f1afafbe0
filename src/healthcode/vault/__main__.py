"""``python -m healthcode.vault`` is ``healthcode vault`` (to run the vault as a subprocess)."""

from healthcode.vault.cli import vault_app

vault_app(prog_name="healthcode vault")
