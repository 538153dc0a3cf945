"""The shape of the project: the library imports no Hydra, OmegaConf or W&B; no module imports
in a cycle; rule modules are thin and import no other rule module; the public API documents
itself."""

import ast
import inspect

import pytest

from helpers import REPO
from topics.library import PACKAGES, imports, modules

RULE_LIMIT = (
    90  # statements of a rule module (about 120 lines; counted in statements, so formatting does not change it)
)


def rules() -> list[str]:
    """The rule modules: the pipeline modules that are an entry point (`cli.main(...)`)."""
    return [
        name
        for name, tree in modules().items()
        if name.startswith("pipeline.") and "cli.main(" in ast.unparse(tree) and name not in ("pipeline.cli",)
    ]


def test_no_import_cycle():
    mods = modules()
    graph = {name: imports(tree, set(mods)) - {name} for name, tree in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_rule_modules_are_thin_and_import_no_other_rule():
    mods = modules()
    names = rules()
    assert {"pipeline.capture", "pipeline.detect", "pipeline.ablate", "pipeline.attention", "pipeline.report"} <= set(
        names
    )
    for name in names:
        others = imports(mods[name], set(mods)) & (set(names) - {name})
        assert not others, f"rule module {name} imports the rule module(s) {sorted(others)}"
        statements = len({n.lineno for n in ast.walk(mods[name]) if isinstance(n, ast.stmt)})
        assert statements <= RULE_LIMIT, f"{name} has {statements} statements (thin rules: at most {RULE_LIMIT})"


def test_one_hook_mechanism():
    """Only massive/core/hooks.py registers forward hooks (and pipeline-free training code its own model)."""
    offenders = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if path.name == "hooks.py":
                continue
            text = path.read_text()
            if "register_forward_hook" in text or "register_forward_pre_hook" in text:
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders


def test_public_api_has_docstrings_with_examples():
    import massive

    for name in massive.__all__:
        obj = getattr(massive, name)
        doc = inspect.getdoc(obj) or ""
        assert doc, f"massive.{name} has no docstring"
        if inspect.isfunction(obj):
            assert ">>>" in doc or "Example" in doc, f"massive.{name}'s docstring has no example"
