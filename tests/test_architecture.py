"""Layering and state rules of docs/architecture.md, checked on the source (function-body imports included)."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
APPLICATION = {"__init__.py", "pipeline.py", "pipeline_outputs.py", "cli.py", "batch.py", "scenes.py"}
OUTER = ("adapters", "tracking", "render")
# Filled once at import by decorators (@register), never by calls: registries, not caches.
REGISTRIES = {("adapters/base.py", "_REGISTRY"), ("posebert_plug/skeletons.py", "_REGISTRY")}


def _core_modules():
    for path in sorted((ROOT / "posebert_plug").rglob("*.py")):
        if path.parent == ROOT / "posebert_plug" and path.name in APPLICATION:
            continue
        yield path


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_the_core_imports_no_adapter_tracker_or_renderer():
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in _core_modules() for m in _imports(p)
           if m.split(".")[0] in OUTER]
    assert not bad, bad


def test_adapters_tracking_and_render_import_only_the_core():
    bad = []
    for pkg in OUTER:
        for p in (ROOT / pkg).rglob("*.py"):
            for m in _imports(p):
                top, rest = m.split(".")[0], m.split(".")[1:]
                if top == "posebert_plug" and rest and f"{rest[0]}.py" in APPLICATION:
                    bad.append(f"{p.relative_to(ROOT)} imports {m}")
                if top in OUTER and top != pkg and not (pkg == "render" and top == "adapters"):
                    bad.append(f"{p.relative_to(ROOT)} imports {m}")
    assert not bad, bad


def test_no_module_level_mutable_cache():
    """A module-level name bound to an empty dict/list/set is a cache filled by calls: state shared by
    every caller of the process. Caches belong to explicit objects (Refiner, BodyModels, renderers)."""
    found = []
    for p in [*_core_modules(), *(q for pkg in OUTER for q in (ROOT / pkg).rglob("*.py")),
              *((ROOT / "posebert_plug" / n) for n in APPLICATION)]:
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                value = node.value
                empty = (isinstance(value, (ast.Dict, ast.List, ast.Set)) and not getattr(value, "keys", None)
                         and not getattr(value, "elts", None)) or \
                    (isinstance(value, ast.Call) and getattr(value.func, "id", "") in ("dict", "list", "set")
                     and not value.args)
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    name = getattr(t, "id", None)
                    if empty and name and (str(p.relative_to(ROOT)), name) not in REGISTRIES:
                        found.append(f"{p.relative_to(ROOT)}: {name}")
    assert not found, found
