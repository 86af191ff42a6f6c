"""The package's shape: imports run one way (down the layers), no module imports itself through a
loop (lazy imports inside functions included), and the compiled module's stub matches the module."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import fastembed_native

PACKAGE_DIR = Path(fastembed_native.__file__).parent
PACKAGE = "fastembed_native"

#: Each subpackage (or top-level module) and its layer; a module may import only from its own
#: layer or lower ones. Modules not listed (cli, bench, serve, integrations) are at the top.
LAYERS = {
    "_core": 0,
    "errors": 0,
    "engine": 1,
    "models": 2,
    "text_embedding": 3,
    "cross_encoder": 3,
    "sparse_text_embedding": 3,
    "late_interaction": 3,
    "bge_m3": 3,
    "__init__": 3,
}
TOP = 4


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package; the compiled ``_core`` is known by its stub."""
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py*")) if p.suffix in (".py", ".pyi")}


def resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in its body (functions included).

    ``from X import name`` counts as importing ``X.name`` when that is a module, else ``X``."""
    modules = package_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        if path.suffix == ".pyi":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve(node, name, is_package)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    # "import a.b.c" names a module that exists, or a name inside one.
                    while target not in modules and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target != name:
                        graph[name].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS["__init__"]
    return LAYERS.get(parts[1], TOP)


def test_the_graph_sees_lazy_and_relative_imports():
    """The checker itself: a lazy import inside a function and a relative one are both edges."""
    graph = import_graph()
    assert "fastembed_native.engine" in graph["fastembed_native.text_embedding"]
    # cli imports the model store inside its command functions only.
    assert "fastembed_native.models" in graph["fastembed_native.cli"]
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"],
        ["d"],
    ]


def test_no_import_cycles():
    cycles = [c for c in strongly_connected(import_graph()) if len(c) > 1]
    assert cycles == [], f"modules that import each other in a loop: {cycles}"


def test_imports_only_go_down_the_layers():
    upward = [
        f"{importer} (layer {layer(importer)}) imports {target} (layer {layer(target)})"
        for importer, targets in import_graph().items()
        for target in targets
        if layer(target) > layer(importer) and not target.startswith(importer + ".")
    ]
    assert upward == []


def test_every_subpackage_says_what_it_owns():
    for init in PACKAGE_DIR.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 200, f"{init} needs a docstring saying what it owns and may import"


@pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy (the [test] extra) is not installed"
)
def test_core_stub_matches_the_compiled_module():
    """``_core.pyi`` against the real module: every name, class, property and signature."""
    allowlist = Path(__file__).parent / "data" / "stubtest_allowlist.txt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            f"{PACKAGE}._core",
            "--concise",
            "--allowlist",
            str(allowlist),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _signature_from_docstring(doc: str) -> list[tuple[str, str | None]]:
    """(name, default) of each parameter in pybind11's first docstring line, ``self`` left out."""
    line = doc.splitlines()[0]
    inside = line[line.index("(") + 1 : line.rindex(") ->")]
    params, depth, current = [], 0, ""
    for char in inside + ",":
        if char == "," and depth == 0:
            if current.strip() and current.strip() != "*":
                name, _, rest = current.strip().partition(":")
                default = rest.partition(" = ")[2].strip() or None
                params.append((name.strip(), default))
            current = ""
            continue
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        current += char
    return [p for p in params if p[0] != "self"]


def _signature_from_stub(node: ast.FunctionDef) -> list[tuple[str, str | None]]:
    args = node.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + [ast.unparse(d) for d in args.defaults]
    params = list(zip([a.arg for a in positional], defaults, strict=True))
    params += [
        (a.arg, ast.unparse(d) if d is not None else None)
        for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    ]
    return [p for p in params if p[0] != "self"]


def test_core_stub_signatures_match_the_bindings():
    """stubtest cannot read the signatures of pybind11 functions; their docstrings carry them.
    Every function and method in the stub has the binding's parameter names and defaults."""
    from fastembed_native import _core

    stub = ast.parse((PACKAGE_DIR / "_core.pyi").read_text(encoding="utf-8"))
    checked = 0
    for node in ast.walk(stub):
        owner = _core
        if isinstance(node, ast.ClassDef):
            owner = getattr(_core, node.name)
            functions = [f for f in node.body if isinstance(f, ast.FunctionDef)]
        elif isinstance(node, ast.FunctionDef) and node in stub.body:
            functions = [node]
        else:
            continue
        for function in functions:
            if any(isinstance(d, ast.Name) and d.id == "property" for d in function.decorator_list):
                continue
            doc = getattr(owner, function.name).__doc__
            expected = _signature_from_docstring(doc)
            got = _signature_from_stub(function)
            assert [n for n, _ in got] == [n for n, _ in expected], f"{function.name}: {got} != {expected}"
            for (name, stub_default), (_, real_default) in zip(got, expected, strict=True):
                if real_default is not None and real_default not in ("[]", "{}"):
                    assert stub_default is not None, f"{function.name}({name}) has a default in the binding"
                    assert stub_default.strip("'\"") == real_default.strip("'\""), (function.name, name)
            checked += 1
    assert checked >= 13
