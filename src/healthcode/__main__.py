"""``python -m healthcode``: the same CLI as the ``healthcode`` console script."""

from healthcode.cli import app

app()
