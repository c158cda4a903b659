"""Imports point down the layers only (DESIGN.md): node -> consensus -> ml, wallet.

Parses every module's imports (no execution), so a forbidden import anywhere
in a file is caught even on a code path no test runs.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PURE_PACKAGES = ("consensus", "ml", "wallet")
# consensus/ is the rule book: no sockets, databases, HTTP or clocks.
CONSENSUS_FORBIDDEN = {"aiohttp", "sqlite3", "socket", "time"}


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_of(package: str) -> list[pathlib.Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_packages_never_import_node(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] == "node")
        for path in modules_of(package)
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_consensus_has_no_io_imports() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if m.split(".")[0] in CONSENSUS_FORBIDDEN
        )
        for path in modules_of("consensus")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_ml_and_wallet_do_not_import_consensus_io() -> None:
    """ml/ and wallet/ sit below consensus/: they never import it."""
    for package in ("ml", "wallet"):
        for path in modules_of(package):
            bad = [m for m in imported_modules(path) if m.split(".")[0] in {"consensus", "node"}]
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_every_module_imports() -> None:
    """A module that fails to import is dead weight a user would trip on."""
    import importlib

    for package in (*PURE_PACKAGES, "node"):
        for path in modules_of(package):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts)
            if name.endswith("__main__"):
                continue
            importlib.import_module(name.removesuffix(".__init__"))


def test_the_checker_sees_a_forbidden_import(tmp_path: pathlib.Path) -> None:
    """The parser really reports imports, so the tests above can fail."""
    sample = tmp_path / "m.py"
    sample.write_text("import time\nfrom node.storage import Store\n")
    assert imported_modules(sample) == {"time", "node.storage"}


@pytest.mark.parametrize("package", ["consensus", "ml", "wallet"])
def test_every_public_name_resolves(package: str) -> None:
    """``__all__`` promises names; each must really exist (lazy or not)."""
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
