"""The rules of the package: copyable anywhere, each variable named in one place, and the
launcher's configuration read from the environment in one place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import realstack
from realstack import contract, embedded
from realstack.project import ProjectConfigError, find_pyproject, load_project

PACKAGE = Path(realstack.__file__).parent
LAUNCHER = Path(embedded.__file__).parent


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_package_imports_itself_only_relatively_and_names_no_project() -> None:
    """Copyable anywhere: no absolute import of where it lives, and not even the name of the
    project it lives in (it derives every name from project.name)."""
    try:
        host = load_project(find_pyproject(PACKAGE)).name
    except ProjectConfigError:
        host = "sample"  # the name these tests give their projects
    for path in _modules(PACKAGE):
        text = path.read_text()
        assert not re.search(rf"^\s*(from|import) {realstack.__name__}\b", text, re.M), path
        assert host not in text.lower(), path


def test_only_the_contract_spells_a_variables_name() -> None:
    """Everything else says contract.POSTGRES_HOST.name: a renamed variable has one home."""
    names = {variable.name for variable in contract.VARIABLES}
    spelled = {
        f"{path.relative_to(PACKAGE)}: {node.value}"
        for path in _modules(PACKAGE)
        if path.name != "contract.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in names
    }
    assert spelled == set()


def test_only_the_launchers_cli_reads_the_environment_for_configuration() -> None:
    lookup = re.compile(r"os\.environ\s*(\.get|\[)|os\.getenv|environ\.get\(")
    readers = [p.name for p in _modules(LAUNCHER) if lookup.search(p.read_text())]
    assert readers == []


def _message_strings(path: Path) -> list[str]:
    """The module's string constants, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_only_the_settings_that_know_make_ran_them_name_a_make_target() -> None:
    """A project of its own has no Makefile: a message names `python -m realstack...` unless
    config.py's under_make (MAKELEVEL) says the user typed make."""
    naming = {
        f"{path.relative_to(PACKAGE)}: {text!r}"
        for path in _modules(PACKAGE)
        if path.name != "config.py"
        for text in _message_strings(path)
        if re.search(r"`make [a-z]", text)
    }
    assert naming == set()
