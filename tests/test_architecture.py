"""The architecture of issue 12 as tests, read off the source with ``ast`` (no project code is imported).

1. dependencies point one way (DESIGN.md "Imports point down"): every import under src/ldm_hub — module level,
   inside functions, dynamic, through the lazy ``_EXPORTS`` tables — makes a module graph, checked transitively;
2. no ``.py`` file longer than 600 lines;
3. at most 12 places outside ``conditioning/`` name a conditioning mode;
4. ``LDMPipeline.__call__`` reads as steps (≤ 100 lines of body), the class has ≤ 25 methods;
5. one ε_θ call: only ``models/denoiser.py`` calls the UNet.

Each failure prints the offending items with file:line. ``python tests/test_architecture.py [SRC]`` prints every
figure for any tree (e.g. an older commit: ``git archive 63efa06 src | tar -x -C /tmp/old`` then
``python tests/test_architecture.py /tmp/old/src/ldm_hub``).
"""

from __future__ import annotations

import ast
import re
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ldm_hub"
EXCLUDED_DIRS = ("default_models",)  # shipped model folders: data, and their generated diffusers loader files
MAX_LINES = 600

# ----------------------------------------------------------------------------------------------- layering
# importer room → the rooms it must not reach, directly or through other modules.
FORBIDDEN = {
    "models": {"pipelines", "convert", "training", "commands", "demo", "hub", "evaluation"},
    "schedulers": {"pipelines", "convert", "training", "commands", "demo", "hub", "evaluation"},
    "conditioning": {"pipelines", "convert", "training", "commands", "demo", "hub", "evaluation"},
    "pipelines": {"training", "commands", "demo", "evaluation"},
    "convert": {"pipelines"},
    "demo": {"commands"},
    "training": {"commands"},
}
# The user-facing entry points that must reach upward at call time: imports inside them are not in the graph.
UPWARD_ENTRY_POINTS = {
    ("ldm_hub.models.autoencoder_blocks", "from_single_file"): (
        "AutoencoderKL/VQModel.from_single_file read an original CompVis checkpoint: the converter is the feature"
    ),
    ("ldm_hub.hub_mixin", "push_to_hub"): (
        "push_to_hub of every model and scheduler uploads through the Hub code (diffusers' own API shape)"
    ),
}
# Dynamic imports (importlib.import_module, __import__, getattr on a lazy package with a computed name) that may
# stay, each with its reason; they add no edge (what they import is a user's file's choice, or resolved otherwise).
ALLOWED_DYNAMIC = {
    ("ldm_hub._lazy", "__getattr__"): "the lazy exports themselves: this test resolves every _EXPORTS table",
    ("ldm_hub.cli", "_command_modules"): "discovers the subcommand modules; the CLI is the top of the graph",
    ("ldm_hub.convert.diffusers_format", "load_component"): (
        "loads the class a user's model_index.json names ([library, class name]), or diffusers' scheduler twin"
    ),
    ("ldm_hub.convert.diffusers_format", "_resolve"): (
        "imports the FOREIGN_MODELS specs, literal 'ldm_hub.x:Name' strings that this test resolves as edges"
    ),
    ("ldm_hub.evaluation", "load_autoencoder"): "loads the class a user's model folder names in config.json",
    ("ldm_hub.training.autoencoder", "build_autoencoder"): (
        "builds the class a user's config.json names (_class_name, one of AUTOENCODER_CLASSES)"
    ),
}
MAX_UPWARD_ENTRY_POINTS = 3
_MODULE_STRING = re.compile(r"^ldm_hub(\.\w+)+(:\w+)?$")


@dataclass
class Module:
    name: str  # dotted: ldm_hub.models.unet
    path: Path
    tree: ast.Module
    is_package: bool

    @property
    def room(self) -> str:
        parts = self.name.split(".")
        if len(parts) == 1:
            return "ldm_hub"
        return {"cli": "commands"}.get(parts[1], parts[1])

    @property
    def package(self) -> str:  # what a relative import of level 1 starts from
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    function: str  # enclosing function's qualname ("" at module level)
    kind: str  # import | from | attribute | dynamic | string


@dataclass
class Graph:
    modules: dict[str, Module]
    edges: list[Edge] = field(default_factory=list)
    dynamic: list[Edge] = field(default_factory=list)  # every dynamic import found (target "?" when unknown)
    excepted: list[Edge] = field(default_factory=list)  # imports inside the upward entry points

    def adjacency(self) -> dict[str, dict[str, Edge]]:
        out: dict[str, dict[str, Edge]] = {name: {} for name in self.modules}
        for edge in self.edges:
            if edge.target != edge.source:
                out[edge.source].setdefault(edge.target, edge)
        return out


def load_modules(src: Path = SRC) -> dict[str, Module]:
    modules = {}
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src.parent)
        if any(part in EXCLUDED_DIRS for part in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        modules[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8"), str(path)), is_package)
    return modules


def _exports(module: Module) -> dict[str, str]:
    """A package's lazy export table {name: absolute module}, read from its ``_EXPORTS = {...}`` literal."""
    table: dict[str, str] = {}
    for node in module.tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            value = ast.literal_eval(node.value)
            for name, target in value.items():
                table[name] = _absolute(target, module.name, 0)
    return table


def _absolute(target: str, package: str, level: int) -> str:
    """``from .x import`` in package → the absolute module name (a leading-dot string counts its dots)."""
    if level == 0 and target.startswith("."):
        level = len(target) - len(target.lstrip("."))
        target = target[level:]
    if level == 0:
        return target
    base = package.split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    ids.add(id(first.value))
    return ids


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportVisitor(ast.NodeVisitor):
    """Collects one module's edges: imports, lazy-export attribute reads, dynamic imports, module strings."""

    def __init__(self, graph: Graph, module: Module, exports: dict[str, dict[str, str]]):
        self.graph, self.module, self.exports = graph, module, exports
        self.scope: list[str] = []
        self.functions: list[str] = []
        self.aliases: list[dict[str, str]] = [{}]  # name → ldm_hub module it is bound to, per function scope
        self.docstrings = _docstring_nodes(module.tree)

    # -- helpers
    def _where(self) -> str:
        return ".".join(self.scope)

    def _add(self, target: str, node: ast.AST, kind: str) -> None:
        modules = self.graph.modules
        while target not in modules and "." in target:  # a symbol of a module: the module
            target = target.rpartition(".")[0]
        if target not in modules or not target.startswith("ldm_hub"):
            return
        parents = target.split(".")
        chain = [".".join(parents[:i]) for i in range(1, len(parents) + 1)]  # importing a.b.c runs a and a.b
        own_packages = {".".join(self.module.name.split(".")[:i]) for i in range(1, self.module.name.count(".") + 1)}
        for name in chain:
            if name in own_packages:  # already imported before this module runs: no dependency of its own
                continue
            edge = Edge(self.module.name, name, node.lineno, self._where(), kind)
            if any((self.module.name, f) in UPWARD_ENTRY_POINTS for f in self.functions):
                self.graph.excepted.append(edge)
            else:
                self.graph.edges.append(edge)

    def _dynamic(self, node: ast.AST, targets: list[str], label: str | None = None) -> None:
        allowed = any((self.module.name, f) in ALLOWED_DYNAMIC for f in self.functions)
        label = label or ",".join(sorted(set(targets))) or "?"
        self.graph.dynamic.append(Edge(self.module.name, label, node.lineno, self._where(), "dynamic"))
        if not allowed:
            for target in targets:
                self._add(target, node, "dynamic")

    def _bind(self, name: str, module: str) -> None:
        if module in self.graph.modules:
            self.aliases[-1][name] = module

    def _alias(self, name: str) -> str | None:
        for scope in reversed(self.aliases):
            if name in scope:
                return scope[name]
        return None

    def _resolve_member(self, module: str, name: str) -> str | None:
        """``module.name`` → the module it loads: a submodule, or a lazy export's module."""
        if f"{module}.{name}" in self.graph.modules:
            return f"{module}.{name}"
        return self.exports.get(module, {}).get(name)

    # -- scopes
    def _visit_function(self, node) -> None:
        self.scope.append(node.name)
        self.functions.append(node.name)
        self.aliases.append({})
        for child in node.decorator_list:
            self.visit(child)
        for child in node.body:
            self.visit(child)
        self.aliases.pop()
        self.functions.pop()
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        if not _is_type_checking(node.test):  # `if TYPE_CHECKING:` imports are for annotations only
            for child in node.body:
                self.visit(child)
        for child in node.orelse:
            self.visit(child)

    # -- imports
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node, "import")
            if alias.asname:
                self._bind(alias.asname, alias.name)
            else:
                top = alias.name.split(".")[0]
                self._bind(top, top)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _absolute(node.module or "", self.module.package, node.level)
        if not base.startswith("ldm_hub"):
            return
        self._add(base, node, "from")
        for alias in node.names:
            if alias.name == "*":
                for target in self.exports.get(base, {}).values():
                    self._add(target, node, "from")
                continue
            target = self._resolve_member(base, alias.name)
            if target is not None:
                self._add(target, node, "from")
            if f"{base}.{alias.name}" in self.graph.modules:
                self._bind(alias.asname or alias.name, f"{base}.{alias.name}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain, inner = [], node
        while isinstance(inner, ast.Attribute):
            chain.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name) and (module := self._alias(inner.id)):
            for attr in reversed(chain):
                target = self._resolve_member(module, attr)
                if target is None:
                    break
                self._add(target, node, "attribute")
                if target != f"{module}.{attr}":  # a lazy export: the chain ends in its module
                    break
                module = target
            return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                package = self.module.package
                if len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                    package = str(node.args[1].value)
                target = _absolute(arg.value, package, 0)
                if target.startswith("ldm_hub"):
                    self._dynamic(node, [target])
            else:
                self._dynamic(node, [])
        elif name in ("getattr", "hasattr") and len(node.args) >= 2 and isinstance(node.args[0], ast.Name):
            module = self._alias(node.args[0].id)
            if module is not None:
                key = node.args[1]
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    target = self._resolve_member(module, key.value)
                    if target is not None:
                        self._add(target, node, "attribute")
                elif module in self.exports:  # a computed name on a lazy package: any of its exports
                    targets = list(self.exports[module].values())
                    self._dynamic(node, targets, f"{module}.<computed name> (any of {len(targets)} exports)")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and id(node) not in self.docstrings and _MODULE_STRING.match(node.value):
            module, _, name = node.value.partition(":")
            self._add(self._resolve_member(module, name) or module if name else module, node, "string")


def build_graph(src: Path = SRC) -> Graph:
    modules = load_modules(src)
    graph = Graph(modules)
    exports = {name: table for name, module in modules.items() if module.is_package and (table := _exports(module))}
    for module in modules.values():
        _ImportVisitor(graph, module, exports).visit(module.tree)
    return graph


def _path(adjacency: dict[str, dict[str, Edge]], source: str, target_rooms: set[str], modules) -> dict[str, list]:
    """Breadth first from ``source``: {reached module in target_rooms: the edges of a shortest path to it}."""
    previous: dict[str, Edge | None] = {source: None}
    queue, found = deque([source]), {}
    while queue:
        current = queue.popleft()
        for target, edge in adjacency[current].items():
            if target in previous:
                continue
            previous[target] = edge
            if modules[target].room in target_rooms:
                path, step = [], edge
                while step is not None:
                    path.append(step)
                    step = previous[step.source]
                found[target] = path[::-1]
            else:
                queue.append(target)
    return found


def _where(module: Module, line: int) -> str:
    path = module.path
    return f"{path.relative_to(SRC.parent.parent) if path.is_relative_to(SRC.parent.parent) else path}:{line}"


def _show_path(path: list[Edge], modules) -> str:
    hops = [path[0].source]
    for e in path:
        hops.append(f"{e.target} ({_where(modules[e.source], e.line)}{' in ' + e.function if e.function else ''})")
    return " -> ".join(hops)


def layering_violations(graph: Graph) -> list[str]:
    """One line per offending import path: the shortest path from a module into a room it must not reach."""
    adjacency = graph.adjacency()
    out = []
    for name, module in graph.modules.items():
        rooms = FORBIDDEN.get(module.room)
        if not rooms:
            continue
        by_hops: dict[tuple, list[Edge]] = {}  # a package and its module reached by the same import: one line
        for _, path in sorted(_path(adjacency, name, rooms, graph.modules).items()):
            if len(path) > 1 and graph.modules[path[0].target].room == module.room:
                continue  # reported from that module of the same room
            hops = tuple((e.source, e.line) for e in path)
            if len(path[-1].target) > len(by_hops.get(hops, path)[-1].target) or hops not in by_hops:
                by_hops[hops] = path
        out += [_show_path(path, graph.modules) for path in by_hops.values()]
    return out


def disallowed_dynamic_imports(graph: Graph) -> list[str]:
    out = []
    for edge in graph.dynamic:
        qual = edge.function.split(".")
        if not any((edge.source, f) in ALLOWED_DYNAMIC for f in qual):
            where = edge.function or "module level"
            out.append(f"{edge.source}:{edge.line} in {where}: dynamic import of {edge.target}")
    return out


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    adjacency = {k: list(v) for k, v in graph.adjacency().items()}
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
            if w not in index:
                connect(w)
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
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(adjacency):
        if v not in index:
            connect(v)
    return sorted(out)


def with_all_edges(graph: Graph) -> Graph:
    """The graph with the imports inside the upward entry points put back (allowed dynamic ones stay out)."""
    return Graph(graph.modules, list(graph.edges) + list(graph.excepted))


# ----------------------------------------------------------------------------------------------- file sizes
def long_files(src: Path = SRC) -> list[tuple[str, int]]:
    out = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src.parent)
        if any(part in EXCLUDED_DIRS for part in rel.parts):
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            out.append((str(rel), lines))
    return out


# ----------------------------------------------------------------------------------------------- mode mentions
MODES = ("text", "layout", "class", "semantic", "inpaint", "superres", "unconditional")
MAX_MODE_MENTIONS = 12
_MODE_VARIABLE = re.compile(r"(^|_)(mode|conditioning|task)s?($|_)")
_NAME_PART = re.compile(r"^[\w.\-/]*$")  # a literal that builds a name (no spaces: not a message)


def _is_mode(node) -> bool:
    return isinstance(node, ast.Constant) and node.value in MODES


def _holds_mode(node) -> bool:
    if _is_mode(node):
        return True
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_mode(e) for e in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("frozenset", "set"):
        return any(_holds_mode(a) for a in node.args)
    return False


def _mode_variable(node) -> bool:
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
    return name is not None and bool(_MODE_VARIABLE.search(name))


def _conditioner_class(node) -> bool:
    if isinstance(node, (ast.Tuple, ast.List)):
        return any(_conditioner_class(e) for e in node.elts)
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.endswith("Conditioner")


def _mentions_in(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            ops = node.ops
            plain = any(_is_mode(s) for s in sides) and any(
                isinstance(o, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for o in ops
            )
            contains = any(
                isinstance(o, (ast.In, ast.NotIn)) and _holds_mode(right) for o, right in zip(ops, sides[1:])
            )
            if plain or contains:
                yield node.lineno, "comparison with a mode name"
            typed = any(
                isinstance(s, ast.Call) and isinstance(s.func, ast.Name) and s.func.id == "type" for s in sides
            )
            if typed and any(_conditioner_class(s) for s in sides):
                yield node.lineno, "type check against a conditioner class"
        elif isinstance(node, ast.Dict):
            for key in node.keys:
                if key is not None and _is_mode(key):
                    yield key.lineno, f"mode {key.value!r} as a dict key"
        elif isinstance(node, ast.MatchValue) and _is_mode(node.value):
            yield node.lineno, f"mode {node.value.value!r} as a match case"
        elif isinstance(node, ast.JoinedStr):
            literals = [v.value for v in node.values if isinstance(v, ast.Constant)]
            values = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
            if any(literals) and all(_NAME_PART.match(s) for s in literals) and any(map(_mode_variable, values)):
                yield node.lineno, "a name built from a mode (f-string)"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            sides = (node.left, node.right)
            literal = [s for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)]
            if literal and all(_NAME_PART.match(s.value) for s in literal) and any(map(_mode_variable, sides)):
                yield node.lineno, "a name built from a mode (concatenation)"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("isinstance", "issubclass") and len(node.args) == 2:
                if _conditioner_class(node.args[1]):
                    yield node.lineno, f"{node.func.id} against a conditioner class"


def mode_mentions(src: Path = SRC) -> list[str]:
    out = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src.parent)
        if any(part in EXCLUDED_DIRS for part in rel.parts) or rel.parts[1] == "conditioning":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        out += [f"{rel}:{line}: {what}" for line, what in sorted(_mentions_in(tree))]
    return out


# ----------------------------------------------------------------------------------------------- LDMPipeline
MAX_CALL_LINES = 100
MAX_PIPELINE_METHODS = 25
PIPELINE_FILE = Path("pipelines") / "ldm_pipeline.py"


def _methods(cls: ast.ClassDef) -> list[ast.FunctionDef]:
    return [n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _class(tree: ast.AST, name: str) -> ast.ClassDef | None:
    return next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name), None)


def body_lines(function: ast.FunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if not body:
        return 0
    return body[-1].end_lineno - body[0].lineno + 1


def pipeline_figures(src: Path = SRC) -> dict:
    """``__call__`` body lines, LDMPipeline's own methods, and the methods of its ldm_hub mixins."""
    modules = load_modules(src)
    tree = ast.parse((src / PIPELINE_FILE).read_text(encoding="utf-8"))
    cls = _class(tree, "LDMPipeline")
    assert cls is not None, f"no class LDMPipeline in {PIPELINE_FILE}"
    methods = _methods(cls)
    call = next((m for m in methods if m.name == "__call__"), None)
    imported = {}  # name → module, from this file's imports
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", "ldm_hub.pipelines", node.level)
            for alias in node.names:
                imported[alias.asname or alias.name] = base
    mixins = {}
    for base in cls.bases:
        name = base.id if isinstance(base, ast.Name) else None
        module = imported.get(name) if name else None
        if name and (module in modules or _class(tree, name) is not None):
            mixin = _class(modules[module].tree, name) if module in modules else _class(tree, name)
            if mixin is not None:
                where = module if module in modules else "ldm_hub.pipelines.ldm_pipeline"
                mixins[f"{where}.{name}"] = [m.name for m in _methods(mixin)]
    return {
        "call_lines": body_lines(call) if call else 0,
        "methods": [m.name for m in methods],
        "mixins": mixins,
    }


# ----------------------------------------------------------------------------------------------- ε_θ calls
UNET_NAMES = {"unet", "raw_unet"}
DENOISER = Path("ldm_hub") / "models" / "denoiser.py"


def _calls_unet(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute) and func.attr in ("forward", "__call__"):
        func = func.value
    if isinstance(func, ast.Name):
        return func.id in UNET_NAMES
    return isinstance(func, ast.Attribute) and func.attr in UNET_NAMES


def unet_calls(src: Path = SRC) -> list[str]:
    out = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src.parent)
        if any(part in EXCLUDED_DIRS for part in rel.parts) or rel == DENOISER:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _calls_unet(node.func):
                out.append(f"{rel}:{node.lineno}: {ast.unparse(node.func)}(...)")
    return sorted(out, key=lambda s: (s.split(":")[0], int(s.split(":")[1])))


# ----------------------------------------------------------------------------------------------- the tests
def _report(title: str, items: list[str]) -> str:
    return f"{title} ({len(items)}):\n  " + "\n  ".join(items)


def test_analysis_sees_the_known_imports():
    """The graph builder itself: a few edges of today's code that each resolution rule must find."""
    graph = build_graph()
    edges = {(e.source, e.target, e.kind) for e in graph.edges + graph.excepted}
    assert ("ldm_hub.models.unet", "ldm_hub.models.attention", "from") in edges  # relative, module level
    assert ("ldm_hub.cli", "ldm_hub.commands", "from") in edges  # `from . import commands`
    assert any(t == "ldm_hub.pipelines.ldm_pipeline" for _, t, _ in edges)  # only ever through _EXPORTS or `from`
    # the upward entry points are found, and set aside
    for module, function in UPWARD_ENTRY_POINTS:
        assert module in graph.modules, f"stale UPWARD_ENTRY_POINTS entry: no module {module}"
        found = [n for n in ast.walk(graph.modules[module].tree) if getattr(n, "name", None) == function]
        assert found, f"stale UPWARD_ENTRY_POINTS entry: no function {function} in {module}"
    assert any(e.function.endswith("push_to_hub") for e in graph.excepted)


def test_analysis_rules_on_a_small_tree(tmp_path):
    """Each resolution rule on a made-up package: relative, function-local, lazy export, dynamic, TYPE_CHECKING."""
    files = {
        "__init__.py": '_EXPORTS = {"Pipe": ".pipelines.pipe", "Unet": ".models.unet"}',
        "models/__init__.py": "",
        "models/unet.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..pipelines import pipe\n"
        "def f():\n    import ldm_hub\n    return ldm_hub.Pipe\n",
        "models/autoencoder_blocks.py": "def from_single_file():\n    from ..convert import ckpt\n",
        "convert/__init__.py": "",
        "convert/ckpt.py": "import importlib\nM = 'ldm_hub.models.autoencoder_blocks:X'\n"
        "def g(name):\n    return importlib.import_module(name)\n",
        "pipelines/__init__.py": "",
        "pipelines/pipe.py": "from ..models import unet\n",
    }
    for name, text in files.items():
        (tmp_path / "ldm_hub" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ldm_hub" / name).write_text(text)
    graph = build_graph(tmp_path / "ldm_hub")
    edges = {(e.source, e.target) for e in graph.edges}
    assert ("ldm_hub.models.unet", "ldm_hub.pipelines.pipe") in edges  # import ldm_hub; ldm_hub.Pipe
    assert ("ldm_hub.pipelines.pipe", "ldm_hub.models.unet") in edges
    assert ("ldm_hub.convert.ckpt", "ldm_hub.models.autoencoder_blocks") in edges  # a module string
    assert ("ldm_hub.models.autoencoder_blocks", "ldm_hub.convert.ckpt") not in edges  # an upward entry point
    assert [(e.source, e.target) for e in graph.dynamic] == [("ldm_hub.convert.ckpt", "?")]
    assert any(line.startswith("ldm_hub.models.unet -> ldm_hub.pipelines.pipe") for line in layering_violations(graph))
    assert len(layering_violations(graph)) == 1
    assert cycles(graph) == [["ldm_hub.models.unet", "ldm_hub.pipelines.pipe"]]


def test_mode_mentions_rules():
    code = (
        'if mode == "text" or m in ("layout", "x") or "class" != c: pass\n'
        'T = {"semantic": 1, "other": 2}\n'
        'match m:\n    case "inpaint": pass\n'
        'getattr(self, f"_prepare_{mode}")\n'
        'x = "_encode_" + self.conditioning\n'
        "isinstance(c, (TextConditioner, int))\n"
        "type(c) is LayoutConditioner\n"
        'raise ValueError(f"bad mode {mode!r}")  # a message, not a name\n'
        'def f():\n    """text == layout in a docstring"""\n'
        'y = {"text"}  # a set, not a comparison\n'
    )
    found = sorted(_mentions_in(ast.parse(code)))
    assert [line for line, _ in found] == [1, 1, 1, 2, 4, 5, 6, 7, 8], found


def test_dependencies_point_one_way():
    assert len(UPWARD_ENTRY_POINTS) <= MAX_UPWARD_ENTRY_POINTS
    graph = build_graph()
    violations = layering_violations(graph)
    dynamic = disallowed_dynamic_imports(graph)
    message = _report("imports against DESIGN.md's layering (room -> forbidden room)", violations)
    message += "\n" + _report("dynamic imports not in ALLOWED_DYNAMIC", dynamic)
    assert not violations and not dynamic, message


def test_no_file_over_600_lines():
    found = long_files()
    assert not found, _report(f"files over {MAX_LINES} lines", [f"{p}: {n}" for p, n in found])


def test_mode_mentions_outside_conditioning():
    found = mode_mentions()
    assert len(found) <= MAX_MODE_MENTIONS, _report(
        f"mode mentions outside conditioning/ (max {MAX_MODE_MENTIONS})", found
    )


def test_pipeline_call_reads_as_steps():
    figures = pipeline_figures()
    mixins = "\n".join(f"  mixin {name}: {len(m)} methods {m}" for name, m in figures["mixins"].items())
    message = (
        f"LDMPipeline.__call__ body: {figures['call_lines']} lines (max {MAX_CALL_LINES}); "
        f"LDMPipeline's own methods: {len(figures['methods'])} (max {MAX_PIPELINE_METHODS}) {figures['methods']}"
        + (f"\n{mixins}" if mixins else "")
    )
    print(message)
    assert figures["call_lines"] <= MAX_CALL_LINES, message
    assert len(figures["methods"]) <= MAX_PIPELINE_METHODS, message


def test_one_epsilon_theta_call():
    found = unet_calls()
    assert not found, _report(f"UNet calls outside {DENOISER}", found)


def main(src: Path) -> None:
    graph = build_graph(src)
    print(_report("files over 600 lines", [f"{p}: {n}" for p, n in long_files(src)]))
    mentions = mode_mentions(src)
    per_file: dict[str, int] = {}
    for item in mentions:
        per_file[item.split(":")[0]] = per_file.get(item.split(":")[0], 0) + 1
    kinds: dict[str, int] = {}
    for item in mentions:
        kind = re.sub(r"mode '\w+' ", "mode ", item.split(": ", 1)[1])
        kinds[kind] = kinds.get(kind, 0) + 1
    print(_report("mode mentions outside conditioning/", mentions))
    print("  by file:", dict(sorted(per_file.items(), key=lambda kv: -kv[1])))
    print("  by kind:", kinds)
    print(_report("layering violations", layering_violations(graph)))
    print(_report("dynamic imports not allowed", disallowed_dynamic_imports(graph)))
    print(
        _report(
            "import cycles (entry points and allowed dynamic imports set aside)", [" ".join(c) for c in cycles(graph)]
        )
    )
    print(_report("import cycles (every import)", [" ".join(c) for c in cycles(with_all_edges(graph))]))
    if (src / PIPELINE_FILE).is_file():
        figures = pipeline_figures(src)
        print(f"LDMPipeline.__call__ body lines: {figures['call_lines']}; own methods: {len(figures['methods'])}")
        for name, methods in figures["mixins"].items():
            print(f"  mixin {name}: {len(methods)} methods")
    print(_report("UNet calls outside models/denoiser.py", unet_calls(src)))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else SRC)
