"""What code a stage runs, by content: the `code` stage's work.

Each stage script in ``stages/`` imports modules of the ``rnnlm`` package, which import others.
:func:`closure` follows those imports (statically, every ``import`` statement of every module,
also inside functions) and :func:`fingerprint` hashes the syntax trees of the script and of every
module it reaches, without docstrings. The `code` stage writes one such hash per stage script to
``data/code/<script>.sha256``, and each stage depends on its own file instead of a hand-kept list
of source files: an edit that changes what a stage runs reruns it, and a comment, docstring or
formatting edit reruns nothing (the hash files come out the same).
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "rnnlm"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imported_modules(tree: ast.Module, package_dir: Path, in_package: bool) -> set[str]:
    """Names of the package's modules that ``tree`` imports (``train``, ``models``, ...)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE and len(parts) > 1:
                    found.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            relative = node.level > 0 and in_package
            parts = (node.module or "").split(".") if node.module else []
            if relative or (node.level == 0 and parts[:1] == [PACKAGE]):
                sub = parts if relative else parts[1:]
                if sub:  # from .x import y / from rnnlm.x import y
                    found.add(sub[0])
                else:  # from . import x / from rnnlm import x
                    found.update(a.name for a in node.names)
    return {m for m in found if (package_dir / f"{m}.py").exists()}


def closure(script: Path, package_dir: Path, in_package: bool = False) -> list[Path]:
    """The package modules ``script`` runs: its imports, theirs, and so on (sorted).
    ``in_package``: ``script`` is a module of the package (its relative imports count)."""
    todo = _imported_modules(_tree(script), package_dir, in_package) | {"__init__"}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or not (package_dir / f"{name}.py").exists():
            continue
        seen.add(name)
        todo |= _imported_modules(_tree(package_dir / f"{name}.py"), package_dir, in_package=True) - seen
    return sorted(package_dir / f"{m}.py" for m in seen)


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_hash(path: Path) -> str:
    """sha256 of a Python file's syntax tree without docstrings: comments, docstrings and
    formatting do not change it; any change to what runs does."""
    return hashlib.sha256(ast.dump(_without_docstrings(_tree(path))).encode("utf-8")).hexdigest()


def fingerprint(files: list[Path], root: Path) -> str:
    """One sha256 over ``files`` (named relative to ``root``), in order."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root).as_posix()}\0{source_hash(f)}\n".encode())
    return h.hexdigest()


def stage_fingerprints(root: Path) -> dict[str, tuple[str, list[Path]]]:
    """{script name: (fingerprint, the files it covers)} for every ``stages/*.py`` under ``root``."""
    package_dir = root / PACKAGE
    out = {}
    for script in sorted((root / "stages").glob("[!_]*.py")):  # not __init__.py
        files = [script, *closure(script, package_dir)]
        out[script.stem] = (fingerprint(files, root), files)
    return out
