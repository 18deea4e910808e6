"""Shared pytest settings: project paths, quiet TensorFlow logs, tools/ on ``sys.path``, test tiers.

tools/ holds the developer code outside the package (tools/benchmarks, tools/regions.py and the
generators); its tests import those modules by name, as the scripts of tools/ do when they run.
Test tiers (below): ``pytest --quick`` (make check) runs the tests that import neither TensorFlow/Keras
nor Ray/PySpark and are not marked slow; the markers keras and cluster are set here from the imports.
"""

import ast
import inspect
import os
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
EXPORTED = ROOT / "exported"
sys.path.insert(0, str(ROOT / "tools"))


# --- Test tiers -------------------------------------------------------------------------------------
# `make test` runs every test. `make check` runs `pytest --quick`: the tests that need neither
# TensorFlow/Keras nor Ray/Spark and carry no `slow` marker (training, Keras fitting, virtualenvs).
# The tier is read from the imports, so a new test lands in the right one without a marker:
#   keras   -- the test imports TensorFlow, Keras, tf2onnx or another Keras backend
#   cluster -- the test imports Ray or PySpark
# "Imports": `import` statements and `pytest.importorskip(...)` calls, at the test module's top level
# (then for all its tests), in the test function, or in a fixture it uses; followed through the
# project's own modules (pipeline/, tests/, tools/) at their top level. Under --quick a module with
# such a top-level import is not even collected (importing TensorFlow, Ray and PySpark costs ~20 s
# here), and a quick test that imports one of them anyway (say through a project function that
# imports TensorFlow when called) fails with the reason, so a misplaced test cannot slip in.

HEAVY_TIERS = {"tensorflow": "keras", "keras": "keras", "tf2onnx": "keras", "jax": "keras", "torch": "keras",
               "ray": "cluster", "pyspark": "cluster"}
QUICK_EXCLUDES = ("slow", "keras", "cluster")


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true",
                     help="only the quick tier (make check): no TensorFlow/Keras, Ray or Spark, nothing marked slow")


def _imported_names(root: ast.AST, top_level_only: bool) -> set:
    """Dotted names that running ``root`` imports: import statements and importorskip("name") calls.
    top_level_only: not inside function or class bodies (what importing a module runs)."""
    names: set = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # may be submodules
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) == "importorskip":
                names.add(str(node.args[0].value))
        for child in ast.iter_child_nodes(node):
            if not (top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))):
                stack.append(child)
    return names


def _local_file(dotted: str, near: Path):
    """The project's file for a dotted module name (pipeline/, tests/, tools/ or next to the importer)."""
    parts = dotted.split(".")
    for base in (ROOT, ROOT / "tests", ROOT / "tools", near):
        path = base.joinpath(*parts)
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return candidate.resolve()
    return None


_MODULE_HEAVY: dict = {}


def _heavy(names: set, near: Path) -> set:
    """The HEAVY_TIERS packages among ``names`` and among what the project modules in ``names`` import."""
    found = set()
    for dotted in names:
        parts = dotted.split(".")
        if parts[0] in HEAVY_TIERS:
            found.add(parts[0])
            continue
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, then a/b/c
            local = _local_file(".".join(parts[:i]), near)
            if local is not None:
                found |= _module_heavy(local)
    return found


def _module_heavy(path: Path) -> frozenset:
    """The HEAVY_TIERS packages that importing the module at ``path`` imports (top level, followed)."""
    if path not in _MODULE_HEAVY:
        _MODULE_HEAVY[path] = frozenset()  # an import cycle adds nothing
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (OSError, SyntaxError, UnicodeDecodeError):
            return frozenset()
        _MODULE_HEAVY[path] = frozenset(_heavy(_imported_names(tree, top_level_only=True), path.parent))
    return _MODULE_HEAVY[path]


def _function_heavy(func) -> set:
    """The HEAVY_TIERS packages a test or fixture function imports in its body."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
        near = Path(inspect.getsourcefile(func)).parent
    except (OSError, TypeError, SyntaxError):
        return set()
    return _heavy(_imported_names(tree, top_level_only=False), near)


def item_tiers(item) -> set:
    """The tiers ('keras', 'cluster') of a collected test: its module, its function, its fixtures."""
    heavy = set(_module_heavy(Path(item.path).resolve()))
    funcs = [getattr(item, "function", None)]
    for defs in getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).values():
        funcs += [d.func for d in defs]
    for func in funcs:
        source = inspect.getsourcefile(func) if func is not None else None
        if source and Path(source).resolve().is_relative_to(ROOT / "tests"):  # not pytest's own fixtures
            heavy |= _function_heavy(func)
    return {HEAVY_TIERS[name] for name in heavy}


def pytest_ignore_collect(collection_path, config):
    if config.getoption("--quick") and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return bool(_module_heavy(collection_path.resolve())) or None
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        for tier in sorted(item_tiers(item)):
            item.add_marker(tier)
    if config.getoption("--quick"):
        keep = [item for item in items if not any(item.get_closest_marker(m) for m in QUICK_EXCLUDES)]
        if len(keep) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if item not in keep])
            items[:] = keep


@pytest.fixture(autouse=True)
def _quick_tier_stays_light(request):
    """Under --quick, a test that imports a heavy package anyway fails: its imports do not show its tier."""
    if not request.config.getoption("--quick"):
        yield
        return
    before = {name for name in HEAVY_TIERS if name in sys.modules}
    yield
    late = sorted(name for name in HEAVY_TIERS if name in sys.modules and name not in before)
    if late:
        pytest.fail(f"imported {', '.join(late)} under --quick (make check); import it in the test, its module or "
                    f"its fixture (or pytest.importorskip it there) so tests/conftest.py puts the test in the "
                    f"{'/'.join(sorted({HEAVY_TIERS[n] for n in late}))} tier", pytrace=False)
