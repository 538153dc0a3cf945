"""What tests/unit/test_library.py and tests/rules/test_library_rule.py share: the project's modules, parsed, and
the project modules each imports."""

import ast

from helpers import REPO

PACKAGES = tuple(
    p for p in ("massive", "pipeline", "kernels") if (REPO / p).is_dir()
)  # kernels: until it moves into massive


def modules() -> dict[str, ast.Module]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def imports(tree: ast.Module, known: set[str]) -> set[str]:
    """The project modules a module imports anywhere in its body (lazy imports included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and not (REPO / name.replace(".", "/")).is_dir():  # a package's __init__ is no edge
                found.add(name)
    return found
