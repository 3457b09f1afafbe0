"""Test configuration: real services, started by the fixtures under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.pii_sweep",
    "tests.fixtures.postgres",
    "tests.fixtures.openbao",
    "tests.fixtures.platform",
]
