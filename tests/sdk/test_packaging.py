"""The SDK installs and imports without the server: no module under ``sdk/src`` imports the
``healthcode`` package, and the distribution depends only on the four gRPC/protobuf packages."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

SDK = Path(__file__).resolve().parents[2] / "sdk"
ALLOWED_DEPENDENCIES = {"grpcio", "grpcio-status", "protobuf", "googleapis-common-protos"}
# Top-level modules the SDK may import: the standard library plus what the dependencies provide.
ALLOWED_TOP_LEVEL = {"grpc", "grpc_status", "google", "healthcode_sdk"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_sdk_module_imports_the_server_package() -> None:
    sources = sorted((SDK / "src").rglob("*.py")) + sorted((SDK / "src").rglob("*.pyi"))
    assert len(sources) > 10, "the SDK sources were not found"
    offenders = {
        str(path.relative_to(SDK)): sorted(
            n for n in _imports(path) if n == "healthcode" or n.startswith("healthcode.")
        )
        for path in sources
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_hand_written_modules_import_only_the_declared_dependencies() -> None:
    import sys

    for path in sorted((SDK / "src" / "healthcode_sdk").glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            assert (
                top in ALLOWED_TOP_LEVEL or top in sys.stdlib_module_names or top == "__future__"
            ), f"{path.name} imports {name}"


def test_sdk_distribution_depends_only_on_grpc_and_protobuf() -> None:
    project = tomllib.loads((SDK / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "healthcode-sdk"
    names = {
        re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]
    }
    assert names == ALLOWED_DEPENDENCIES
    assert "optional-dependencies" not in project or not any(
        "healthcode" in dep for deps in project["optional-dependencies"].values() for dep in deps
    )


def test_version_matches_the_distribution() -> None:
    import healthcode_sdk

    project = tomllib.loads((SDK / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert healthcode_sdk.__version__ == project["version"]
