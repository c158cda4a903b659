"""Imports point down the layers only (DESIGN.md): node -> consensus -> ml, wallet.

Parses every module's imports (no execution), so a forbidden import anywhere
in a file is caught even on a code path no test runs. What consensus reaches
is followed transitively through ml and wallet: a rule that read sklearn's
data through a helper two modules down would break the promise that every
input of the state transition is passed in.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PURE_PACKAGES = ("consensus", "ml", "wallet")
# consensus/ is the rule book: no sockets, databases, HTTP or clocks.
CONSENSUS_FORBIDDEN = {"aiohttp", "sqlite3", "socket", "time"}
OUR_PACKAGES = ("consensus", "ml", "wallet", "node")
# Nothing consensus reaches, however indirectly, loads data sets, talks to the
# network or reads the clock: the node loads what the rules read and passes it in.
REACHED_FORBIDDEN = {
    *CONSENSUS_FORBIDDEN, "sklearn", "ml.datasets", "node", "urllib", "http", "requests", "pickle", "pandas",
}
# Decorators that keep results between calls: hidden state in a rule.
CACHE_DECORATORS = {"cache", "lru_cache", "functools.cache", "functools.lru_cache"}


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


def module_path(name: str) -> pathlib.Path | None:
    """The file of our module ``name`` (a package's ``__init__.py``), or None if it is not ours."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if name.split(".")[0] in OUR_PACKAGES and path.is_file():
            return path
    return None


def imported_names(path: pathlib.Path) -> set[str]:
    """Like :func:`imported_modules`, plus ``pkg.name`` for each ``from pkg import name``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = imported_modules(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def reached_from(package: str) -> dict[str, str]:
    """Every module name imported by ``package`` or, transitively, by our modules it imports.

    Maps each name to the module that first imported it, for the error message.
    Parent packages count: importing ``ml.gate`` runs ``ml/__init__.py``.
    """
    reached: dict[str, str] = {}
    todo = [(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"), p)
            for p in modules_of(package)]
    seen = {name for name, _ in todo}
    while todo:
        importer, path = todo.pop()
        for name in sorted(imported_names(path)):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                reached.setdefault(prefix, importer)
                target = module_path(prefix)
                if target is not None and prefix not in seen:
                    seen.add(prefix)
                    todo.append((prefix, target))
    return reached


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


def test_consensus_reaches_no_data_loader_or_io_even_indirectly() -> None:
    reached = reached_from("consensus")
    bad = {name: via for name, via in reached.items() if name in REACHED_FORBIDDEN}
    assert not bad, f"consensus reaches (module: imported by) {bad}"


def test_the_transitive_check_follows_imports_through_ml() -> None:
    """It sees what ml modules import, so the check above can fail."""
    reached = reached_from("ml")
    assert reached.get("sklearn") in {"ml.datasets", "ml.tabular"}  # the data loaders that use it
    assert "ml.checks" in reached_from("consensus")  # through consensus.transition -> ml.*


def test_importing_every_consensus_module_loads_no_data_loader() -> None:
    """At run time too: a fresh interpreter that imports all of consensus has not loaded sklearn."""
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
             for p in modules_of("consensus")]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('sklearn', 'ml.datasets', 'node') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_consensus_keeps_no_caches() -> None:
    """No memoising decorator in consensus/: a rule's answer depends on its arguments alone."""
    offenders = []
    for path in modules_of("consensus"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for deco in node.decorator_list:
                    target = deco.func if isinstance(deco, ast.Call) else deco
                    if ast.unparse(target) in CACHE_DECORATORS:
                        offenders.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert not offenders


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
