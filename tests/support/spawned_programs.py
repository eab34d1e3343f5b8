"""Which programs Python sources run: a static scan for the required-binaries test.

Every call that starts a program (``subprocess.run``/``Popen``/..., ``os.exec*``,
``os.system``, ``asyncio.create_subprocess_*``) or looks one up (``shutil.which``)
is found, and the program's name is worked out from the argument: a literal,
``[NAME, ...]``, ``prefix + argv``, ``str(DIR / "name")``, a constant, a local
variable, or a parameter of a helper, followed to every call of that helper in
the same module (``_run(["groupadd", ...])``). A call whose program cannot be
worked out this way is reported as unresolved rather than ignored, so a new way
of starting programs cannot slip past the check.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Module -> function -> index of the argument naming the program.
_SPAWNERS: dict[str, dict[str, int]] = {
    "subprocess": {n: 0 for n in ("run", "Popen", "call", "check_call", "check_output",
                                  "getoutput", "getstatusoutput")},
    "os": {
        **{n: 0 for n in ("system", "popen", "execv", "execve", "execvp", "execvpe", "execl",
                          "execle", "execlp", "execlpe", "posix_spawn", "posix_spawnp")},
        **{n: 1 for n in ("spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle",
                          "spawnlp", "spawnlpe")},
    },
    "shutil": {"which": 0},
    "asyncio": {"create_subprocess_exec": 0, "create_subprocess_shell": 0},
    "pty": {"spawn": 0},
}  # fmt: skip
PYTHON = "python"  # sys.executable: the interpreter itself
_MAX_DEPTH = 12


class Unresolved(Exception):
    """The program a call starts cannot be worked out statically."""


@dataclass
class SpawnSite:
    """One call that starts (or looks up) a program."""

    path: Path
    line: int
    programs: frozenset[str] = frozenset()
    problem: str | None = None

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class _Frame:
    """Where a name is looked up: a function (or the module) and, when known, the
    call that entered it (parameter -> argument expression and the caller's frame)."""

    module: _Module
    function: ast.FunctionDef | ast.AsyncFunctionDef | None
    bindings: dict[str, tuple[ast.expr, _Frame]] | None = None


@dataclass
class _Module:
    path: Path
    tree: ast.Module
    spawners: dict[str, tuple[str, str]] = field(default_factory=dict)  # local name -> (mod, fn)
    modules: dict[str, str] = field(default_factory=dict)  # local name -> module
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)

    @classmethod
    def parse(cls, path: Path) -> _Module:
        tree = ast.parse(path.read_text(), filename=str(path))
        module = cls(path, tree)
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                module.parents[child] = node
            if isinstance(node, ast.Import):
                for alias in node.names:
                    module.modules[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module in _SPAWNERS:
                for alias in node.names:
                    if alias.name in _SPAWNERS[node.module]:
                        module.spawners[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                module.functions.setdefault(node.name, node)
        return module

    def enclosing_function(self, node: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        current = self.parents.get(node)
        while current is not None:
            if isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef):
                return current
            current = self.parents.get(current)
        return None

    def spawner(self, call: ast.Call) -> int | None:
        """The index of the program argument when ``call`` starts a program, else None."""
        func = call.func
        if isinstance(func, ast.Name) and func.id in self.spawners:
            mod, name = self.spawners[func.id]
            return _SPAWNERS[mod][name]
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            module = self.modules.get(func.value.id)
            if module is not None and func.attr in _SPAWNERS.get(module, {}):
                return _SPAWNERS[module][func.attr]
        return None

    def calls_of(self, function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.Call]:
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else (func.attr if isinstance(func, ast.Attribute) else None)
            )
            if name == function.name:
                yield node


def _program_name(text: str) -> str:
    words = text.split()
    if not words:
        raise Unresolved("an empty command")
    return words[0].rsplit("/", 1)[-1]


def _argument(
    call: ast.Call, function: ast.FunctionDef | ast.AsyncFunctionDef, param: str
) -> ast.expr | None:
    params = [a.arg for a in [*function.args.posonlyargs, *function.args.args]]
    if params and params[0] in {"self", "cls"} and isinstance(call.func, ast.Attribute):
        params = params[1:]
    for keyword in call.keywords:
        if keyword.arg == param:
            return keyword.value
    if param in params and params.index(param) < len(call.args):
        return call.args[params.index(param)]
    defaults = function.args.defaults
    all_params = [a.arg for a in [*function.args.posonlyargs, *function.args.args]]
    offset = len(all_params) - len(defaults)
    if param in all_params and all_params.index(param) >= offset:
        return defaults[all_params.index(param) - offset]
    return None


def _assigns(node: ast.AST, name: str) -> ast.expr | None:
    """The value ``node`` assigns to ``name``, if it is such an assignment."""
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == name for t in node.targets
    ):
        return node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.value if node.target.id == name else None
    return None


def _assignments(scope: ast.AST, name: str) -> list[ast.expr]:
    found: list[ast.expr] = []
    body = scope.body if isinstance(scope, ast.Module) else [scope]
    for statement in body:
        for node in ast.walk(statement):
            value = _assigns(node, name)
            if value is not None:
                found.append(value)
            if isinstance(scope, ast.Module) and isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            ):
                break
    return found


class _Resolver:
    def __init__(self, module: _Module) -> None:
        self.module = module

    def first(self, node: ast.expr, frame: _Frame, depth: int = 0) -> tuple[set[str], bool]:
        """Programs ``node`` (a command string or argv) may start with, and whether the
        sequence may be empty (``[] + argv``)."""
        if depth > _MAX_DEPTH:
            raise Unresolved("too many indirections")
        if isinstance(node, ast.List | ast.Tuple):
            if not node.elts:
                return set(), True
            head = node.elts[0]
            if isinstance(head, ast.Starred):
                return self.first(head.value, frame, depth + 1)
            return self.name(head, frame, depth + 1), False
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, empty = self.first(node.left, frame, depth + 1)
            if empty:
                right, right_empty = self.first(node.right, frame, depth + 1)
                return left | right, right_empty
            return left, False
        if isinstance(node, ast.IfExp):
            a, a_empty = self.first(node.body, frame, depth + 1)
            b, b_empty = self.first(node.orelse, frame, depth + 1)
            return a | b, a_empty or b_empty
        if isinstance(node, ast.Name):
            return self._merge(
                [self.first(value, where, depth + 1) for value, where in self.lookup(node, frame)]
            )
        return self.name(node, frame, depth + 1), False

    def name(self, node: ast.expr, frame: _Frame, depth: int = 0) -> set[str]:
        """Programs a single expression (a name or a path) may stand for."""
        if depth > _MAX_DEPTH:
            raise Unresolved("too many indirections")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {_program_name(node.value)}
        if isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value:
                return {_program_name(head.value)}
            raise Unresolved(f"a command built by an f-string: {ast.unparse(node)}")
        if isinstance(node, ast.Attribute) and ast.unparse(node) == "sys.executable":
            return {PYTHON}
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.name(node.right, frame, depth + 1)
        if isinstance(node, ast.BoolOp):
            return set().union(*(self.name(v, frame, depth + 1) for v in node.values))
        if isinstance(node, ast.IfExp):
            return self.name(node.body, frame, depth + 1) | self.name(node.orelse, frame, depth + 1)
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in {"str", "Path"} and node.args:
                return self.name(node.args[0], frame, depth + 1)
            if isinstance(func, ast.Attribute) and func.attr == "fspath" and node.args:
                return self.name(node.args[0], frame, depth + 1)
            index = self.module.spawner(node)
            if index is not None and len(node.args) > index:  # shutil.which(name) or ...
                return self.name(node.args[index], frame, depth + 1)
            if isinstance(func, ast.Name) and func.id in self.module.functions:
                return self._returned(node, self.module.functions[func.id], frame, depth + 1)
        if isinstance(node, ast.Name):
            names: set[str] = set()
            for value, where in self.lookup(node, frame):
                names |= self.name(value, where, depth + 1)
            return names
        raise Unresolved(f"cannot tell which program {ast.unparse(node)!r} names")

    def _returned(
        self,
        call: ast.Call,
        function: ast.FunctionDef | ast.AsyncFunctionDef,
        caller: _Frame,
        depth: int,
    ) -> set[str]:
        inner = _Frame(self.module, function, self._bind(call, function, caller))
        names: set[str] = set()
        for node in ast.walk(function):
            if isinstance(node, ast.Return) and node.value is not None:
                names |= self.name(node.value, inner, depth + 1)
        if not names:
            raise Unresolved(f"{function.name}() returns no program name")
        return names

    def _bind(
        self, call: ast.Call, function: ast.FunctionDef | ast.AsyncFunctionDef, caller: _Frame
    ) -> dict[str, tuple[ast.expr, _Frame]]:
        bindings: dict[str, tuple[ast.expr, _Frame]] = {}
        for arg in [*function.args.posonlyargs, *function.args.args, *function.args.kwonlyargs]:
            value = _argument(call, function, arg.arg)
            if value is not None:
                bindings[arg.arg] = (value, caller)
        return bindings

    def lookup(self, node: ast.Name, frame: _Frame) -> list[tuple[ast.expr, _Frame]]:
        """Every expression the name may hold, each with the frame to read it in."""
        function = frame.function
        if function is not None:
            params = {a.arg for a in [*function.args.posonlyargs, *function.args.args,
                                       *function.args.kwonlyargs]}  # fmt: skip
            if node.id in params:
                if frame.bindings is not None:
                    if node.id not in frame.bindings:
                        raise Unresolved(f"parameter {node.id!r} of {function.name}() not given")
                    return [frame.bindings[node.id]]
                return self._from_callers(function, node.id)
            local = _assignments(function, node.id)
            if local:
                return [(value, frame) for value in local]
        module_frame = _Frame(self.module, None)
        values = _assignments(self.module.tree, node.id)
        if not values:
            raise Unresolved(f"cannot tell what {node.id!r} holds")
        return [(value, module_frame) for value in values]

    def _from_callers(
        self, function: ast.FunctionDef | ast.AsyncFunctionDef, param: str
    ) -> list[tuple[ast.expr, _Frame]]:
        found: list[tuple[ast.expr, _Frame]] = []
        for call in self.module.calls_of(function):
            value = _argument(call, function, param)
            if value is None:
                raise Unresolved(f"a call of {function.name}() gives no {param!r}")
            caller = _Frame(self.module, self.module.enclosing_function(call))
            found.append((value, caller))
        if not found:
            raise Unresolved(
                f"{function.name}() runs its parameter {param!r} and no call in this module "
                "says what it is"
            )
        return found

    @staticmethod
    def _merge(results: list[tuple[set[str], bool]]) -> tuple[set[str], bool]:
        names: set[str] = set()
        empty = False
        for found, may_be_empty in results:
            names |= found
            empty = empty or may_be_empty
        return names, empty


def spawn_sites(path: Path) -> list[SpawnSite]:
    """Every call in the Python file ``path`` that starts or looks up a program."""
    module = _Module.parse(path)
    resolver = _Resolver(module)
    sites: list[SpawnSite] = []
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Call):
            continue
        index = module.spawner(node)
        if index is None:
            continue
        site = SpawnSite(path, node.lineno)
        argument = (
            node.args[index]
            if len(node.args) > index
            else next(
                (k.value for k in node.keywords if k.arg in {"args", "cmd", "path", "file"}), None
            )
        )
        frame = _Frame(module, module.enclosing_function(node))
        try:
            if argument is None:
                raise Unresolved("no program argument")
            programs, _empty = resolver.first(argument, frame)
            site.programs = frozenset(programs)
        except Unresolved as exc:
            site.problem = str(exc)
        sites.append(site)
    return sites


def scan(*roots: Path) -> list[SpawnSite]:
    """:func:`spawn_sites` of every ``*.py`` file under ``roots``."""
    return [
        site
        for root in roots
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.parts
        for site in spawn_sites(path)
    ]
