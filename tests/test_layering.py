"""Imports flow one way, read from the source with `ast` (nothing is imported or compiled).

Each library module sits in a layer and imports only from layers below it, at the top of the
file or inside a function alike. The experiments import the library and what they share
(`purify.experiments._*`), never one another; nothing imports the command line; nothing in the
library imports the benchmark.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).parents[1] / "purify"

# Lowest first. A module may import modules of lower layers only.
LAYERS = (
    ("attacks", "metrics", "stats", "provenance", "contrastive", "compilation"),
    ("config", "claims"),
    ("data", "network", "plan", "crosscheck", "files", "grid"),
    ("landmarks", "trace", "representation", "baselines"),
    ("train", "plotting", "memory"),
    ("results",),
    ("store", "evaluate", "assembly"),
    ("execute",),
    ("engine",),  # the one loop every program runs in
    ("sweeps", "downstream"),
    ("__init__",),  # the flat public API over the modules above
    ("experiment",),  # the protocol an experiment implements
    ("experiments",),  # the built-in experiments, a package
    ("registry", "records"),  # finding experiments; their records on disk
    ("runner",),
    ("benchmarks",),  # `purify bench`, a package
    ("cli",),
    ("__main__",),
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def unit(path: pathlib.Path) -> str:
    """The layer unit of a file: its module, or the top-level subpackage it belongs to."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def module_name(path: pathlib.Path) -> str:
    parts = ("purify", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _public_names() -> dict[str, str]:
    """Names `purify/__init__.py` re-exports -> the module they come from."""
    out = {}
    for node in ast.parse((ROOT / "__init__.py").read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for a in node.names:
                out[a.asname or a.name] = node.module.split(".")[0]
    return out


def imports(path: pathlib.Path) -> list[tuple[str, int]]:
    """Every purify module this file imports (as dotted names), with the line, anywhere in it."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "purify"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "purify":
                continue
            if mod in ("purify", "purify.experiments"):  # `from purify import x`: a module or a public name
                for a in node.names:
                    sub = ROOT.joinpath(*mod.split(".")[1:], a.name)
                    is_module = sub.with_suffix(".py").exists() or sub.is_dir()
                    found.append((f"{mod}.{a.name}" if is_module else mod, node.lineno))
            else:
                found.append((mod, node.lineno))
    return found


def violations(mine: str, found) -> list[str]:
    wrong = []
    for dotted, line in found:
        theirs = _unit_of(dotted)
        if theirs != mine and RANK[theirs] >= RANK[mine]:
            wrong.append(f"line {line}: {dotted} (layer {RANK[theirs]}) from layer {RANK[mine]}")
    return wrong


def _unit_of(dotted: str) -> str:
    parts = dotted.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


FILES = sorted(ROOT.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = sorted({unit(f) for f in FILES} - set(RANK))
    assert not missing, f"give {missing} a layer in LAYERS"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_down(path):
    wrong = violations(unit(path), imports(path))
    assert not wrong, f"{path.relative_to(ROOT)} imports upward or sideways: {wrong}"


def test_experiments_share_but_never_import_one_another():
    for path in sorted((ROOT / "experiments").glob("*.py")):
        for dotted, line in imports(path):
            parts = dotted.split(".")
            if parts[:2] == ["purify", "experiments"] and len(parts) > 2:
                assert parts[2].startswith("_"), f"{path.name}:{line} imports the experiment {dotted}"


def test_the_reader_catches_a_wrong_import():
    """The checker itself, on sources it is handed: upward, sideways and sibling imports."""
    found = imports_in("def f():\n    from .sweeps import sweep\n", "purify")
    assert found == [("purify.sweeps", 2)] and violations("metrics", found)
    assert violations("sweeps", imports_in("from purify import downstream\n", "purify"))  # same layer
    assert not violations("sweeps", imports_in("from . import config\nimport purify.store\n", "purify"))
    assert violations("config", imports_in("from purify import make_task\n", "purify"))  # the public API
    sibling = imports_in("from . import fp_dynamics, _common\nfrom .fp_linf import x\n", "purify.experiments")
    assert [d for d, _ in sibling] == [
        "purify.experiments.fp_dynamics",
        "purify.experiments._common",
        "purify.experiments.fp_linf",
    ]
    assert violations("train", [("purify.benchmarks.suite", 1)]) and violations("sweeps", [("purify.cli", 1)])
