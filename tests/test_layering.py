"""The house's one-way rule, read from the source: ``webmap → layers → geodata``.

Storage (``geodata/``) never imports the domain or the web, the domain never imports the web, and
nothing outside ``geodata/`` reaches into a private (``_name``) of storage — the layers page once
borrowed the importer's ``_mapped_columns``, which tied the page to the importer's insides.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(folder: str) -> list[tuple[str, int, str, list[str]]]:
    """Every import of the modules under ``folder``: (file, line, module, names imported)."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            where = str(path.relative_to(ROOT))
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((where, node.lineno, node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                found.extend((where, node.lineno, a.name, []) for a in node.names)
    return found


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def test_storage_imports_neither_domain_nor_web():
    upward = [f"{f}:{n} {m}" for f, n, m, _names in _imports("geodata") if _top(m) in ("layers", "webmap")]
    assert not upward, upward


def test_domain_does_not_import_the_web():
    upward = [f"{f}:{n} {m}" for f, n, m, _names in _imports("layers") if _top(m) == "webmap"]
    assert not upward, upward


def test_nothing_outside_storage_takes_a_private_name_of_it():
    private = [f"{f}:{n} {m} {name}" for folder in ("layers", "webmap", "scripts")
               for f, n, m, names in _imports(folder) if _top(m) == "geodata"
               for name in names if name.startswith("_") and name != "_"]  # _ is gettext
    assert not private, private


def test_the_import_goes_through_the_service():
    """The page, the command line, the onboarding folder and the worker import through
    ``layers.onboarding.imports``, never the storage modules' import directly."""
    callers = ("webmap/views/layers.py", "webmap/commands/layers.py", "webmap/commands/onboarding.py",
               "webmap/commands/plans.py", "layers/onboarding/folder.py", "layers/worker.py")
    direct = [f"{f}:{n} {m}" for folder in ("webmap", "layers") for f, n, m, _names in _imports(folder)
              if f in callers and m in ("geodata.importer", "geodata.sources")]
    assert not direct, direct


def test_commands_and_views_do_not_import_each_other():
    """The command line and the pages are two doors onto the domain: neither reaches into the
    other (a command that needs what a view computes finds it in ``layers/``)."""
    crossing = [f"{f}:{n} {m}" for f, n, m, _names in _imports("webmap")
                if (f.startswith("webmap/commands/") and m.startswith("webmap.views"))
                or (f.startswith("webmap/views/") and m.startswith("webmap.commands"))]
    assert not crossing, crossing
