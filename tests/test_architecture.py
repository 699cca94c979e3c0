"""The package's layering, read from the source: what may import what.

A module imports only from its own layer or a lower one (LAYERS, lowest first); nothing in
``sa_utils`` imports the tiny world (it plugs itself in: ``sa_utils/plugins.py``); meters
import no experiment; there is one batch-source module and one shipped-files shelf class.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS = [
    ("sa_utils.runtime", "sa_utils.progress", "sa_utils.plugins"),
    ("sa_utils.storage",),
    ("sa_utils.data", "sa_utils.models"),
    ("sa_utils.adapters",),
    ("sa_utils.core", "sa_utils.erasure"),
    ("sa_utils.training", "sa_utils.eval"),
    ("sa_utils.sd",),
    ("sa_utils.recipes",),
    ("sa_utils.chapter",),
    ("tinyworld",),
]


def layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} belongs to no layer of tests/test_architecture.py: add it to LAYERS")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every project import in the file, inside functions too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; write sa_utils.* / tinyworld.*")
            names = [node.module or ""]
            if node.module in ("sa_utils", "tinyworld"):  # from sa_utils import chapter -> sa_utils.chapter
                names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(node.lineno, n) for n in names if n.split(".")[0] in ("sa_utils", "tinyworld")]
    return out


MODULES = sorted(p for pkg in ("sa_utils", "tinyworld") for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_from_a_layer_above_it(path):
    me = module_name(path)
    if me == "sa_utils":
        return  # the curated API names modules lazily, by string
    mine = layer(me)
    above = [
        f"line {line}: {m} (layer {layer(m)})"
        for line, m in imports(path)
        if m not in ("sa_utils", "tinyworld") and layer(m) > mine
    ]
    assert not above, f"{me} (layer {mine}) imports from above it: {above}"


def test_nothing_in_sa_utils_imports_the_tiny_world():
    found = [
        f"{p.relative_to(ROOT)}:{line}"
        for p in MODULES
        if p.parts[len(ROOT.parts)] == "sa_utils"
        for line, m in imports(p)
        if m.split(".")[0] == "tinyworld"
    ]
    assert not found, f"sa_utils must reach the tiny world only through its plugin: {found}"


def test_meters_import_no_experiment():
    for meter in ("memory", "metrics"):
        used = {m for _, m in imports(ROOT / "sa_utils" / "eval" / f"{meter}.py")}
        bad = sorted(
            m
            for m in used
            if m.startswith(
                ("sa_utils.core", "sa_utils.recipes", "sa_utils.sd", "sa_utils.training", "sa_utils.adapters.sd")
            )
        )
        assert not bad, f"sa_utils.eval.{meter} is a meter; it imports experiments: {bad}"


def classes(path: Path) -> list[ast.ClassDef]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]


def test_one_batch_source_module():
    """Every ``source(step) -> batch`` class lives in sa_utils/core/sources.py."""
    where = {}
    for p in MODULES:
        for c in classes(p):
            calls = [f for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "__call__"]
            if c.name.endswith("Source") or any([a.arg for a in f.args.args][1:2] == ["step"] for f in calls):
                where[c.name] = str(p.relative_to(ROOT))
    assert where and set(where.values()) == {"sa_utils/core/sources.py"}, where


def test_the_package_reads_as_its_layers():
    """The folders a newcomer sees are the layers this test enforces (no module left at the top
    besides the base layer's and ``data``)."""
    top = sorted(p.stem for p in (ROOT / "sa_utils").glob("*.py") if p.stem != "__init__")
    assert top == ["data", "plugins", "progress", "runtime"], top
    folders = sorted(p.name for p in (ROOT / "sa_utils").iterdir() if (p / "__init__.py").exists())
    assert folders == [
        "adapters",
        "chapter",
        "core",
        "erasure",
        "eval",
        "models",
        "recipes",
        "sd",
        "storage",
        "training",
    ]


def names_used(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
    }


CODE = [*MODULES, *sorted((ROOT / "scripts").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py"))]


def test_one_checkpoint_format():
    """Every loop saves and resumes through sa_utils/storage/train_state.py, none by hand."""
    by_hand = sorted(
        str(p.relative_to(ROOT))
        for p in CODE
        if p.parent.name != "storage" and names_used(p) & {"optimizer_to_tensors", "optimizer_from_tensors"}
    )
    assert not by_hand, f"these write optimizer state themselves; use save_train_state/load_train_state: {by_hand}"
    users = {p.name for p in CODE if names_used(p) & {"save_train_state", "load_train_state"}}
    assert {"loops.py", "amnesia.py", "train_tiny_sd.py"} <= users, users


def test_one_fisher_accumulator():
    """Both Fisher drivers add into core.fisher.FisherSum; nobody else keeps squared-gradient sums."""
    for rel in ("sa_utils/core/fisher.py", "sa_utils/sd/fisher.py"):
        assert "FisherSum" in names_used(ROOT / rel), rel
    for p in CODE:
        if p.relative_to(ROOT).as_posix() == "sa_utils/core/fisher.py":
            continue
        calls = {
            ast.unparse(n.func)
            for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        }
        own = sorted(c for c in calls if c in ("torch.autograd.grad", "torch.func.vmap", "torch.func.functional_call"))
        assert not own, f"{p.relative_to(ROOT)} takes per-sample gradients itself ({own}); core/fisher.py does"


def test_one_recipe_base():
    import dataclasses
    import importlib

    from sa_utils.recipes.base import Recipe

    for name in ("mnist_vae", "mnist_ddpm", "stable_diffusion"):
        module = importlib.import_module(f"sa_utils.recipes.{name}")
        recipes = {type(r) for r in module.RECIPES.values()}
        assert len(recipes) == 1 and issubclass(recipes.pop(), Recipe), name
        assert "sa_config" in vars(type(next(iter(module.RECIPES.values())))), name
        assert [f.name for f in dataclasses.fields(module.recipe("quick"))][0] == "mode"


def test_the_tests_mirror_the_package():
    """tests/<folder>/ for a subpackage of sa_utils (or the book, the tiny world, the benchmarks);
    tests/test_<module>.py for a top-level module."""
    packages = {p.name for p in (ROOT / "sa_utils").iterdir() if (p / "__init__.py").exists()}
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= packages | {"book", "tinyworld", "benchmarks"}, folders - packages
    modules = {p.stem for p in (ROOT / "sa_utils").glob("*.py")}
    tops = {p.stem.removeprefix("test_") for p in (ROOT / "tests").glob("test_*.py")}
    assert tops <= modules | {"architecture"}, tops - modules
