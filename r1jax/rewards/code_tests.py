"""The test side of the code reward: a test snippet split into probes the sandbox answers and
checks the harness evaluates itself, so that the program under test never sees a test.

A test (`assert add(1, 2) == 3`) needs values only the program can give (`add(1, 2)`) and a
verdict only the harness may give (`== 3`). `compile_test` parses the snippet; `probes` lists the
program values it needs, each a call of a program-defined name with arguments the harness
computes (`add(1, 2)`) or a program-level name (`escaped`); the sandboxed child computes exactly
those and sends them back serialised as plain data (sandbox_child.encode); `passes` then runs the
snippet's asserts here, in the harness's process, on the decoded values. So the program cannot:
- see an expected value (it receives the probes' arguments, never the asserts);
- return an object whose `__eq__` is always true (only None, bool, int, float, str and lists,
  tuples, dicts, sets of them cross; anything else is a failed probe), or redefine `sorted`,
  `len`, `AssertionError`, ... for the checks (they run here, on Python's own);
- forge a result channel line that helps it: the most a forged line can say is what one of its
  calls returned, which is what answering the call says.

Snippets are the subset of Python that data sets' assert tests use:
- statements: `assert <expr>[, message]` (the message is not evaluated), `name = <expr>`,
  `<expr>` (e.g. a call made for its exceptions), `pass`;
- expressions: literals and displays, names, + - * / // % ** and the other operators,
  comparisons, `and`/`or`/`not`, `x if c else y`, subscripts and slices, calls of the harness's
  pure builtins (SAFE_FUNCTIONS: abs, len, sorted, set, round, ... isinstance) and `math.isclose`,
  and calls of the program's functions;
- a program call's arguments must not use another program value (`f(g(1))`, `r = f(1); g(r)`):
  the probes are sent before any value comes back.
Anything else (loops, comprehensions, lambdas, `def`, `with`, `try`, attribute calls such as
`Solution().two_sum(...)`, f-strings outside the message) raises UnsupportedTest at compile time:
the code reward then scores the example as an error (NaN, counted), not as a failure.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
import operator
import types
from collections.abc import Sequence
from typing import Any

from r1jax.rewards import sandbox_child

SAFE_FUNCTIONS = {f.__name__: f for f in (abs, all, any, bool, dict, divmod, float, frozenset, int,
                                          isinstance, len, list, max, min, round, set, sorted, str,
                                          sum, tuple)}
_SAFE_MATH = types.MappingProxyType({"isclose": math.isclose, "inf": math.inf, "nan": math.nan,
                                     "pi": math.pi, "e": math.e})
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow, ast.LShift: operator.lshift, ast.RShift: operator.rshift,
           ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.BitXor: operator.xor}
_UNARY = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos,
          ast.Invert: operator.invert}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_,
            ast.IsNot: operator.is_not, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b}
# The harness computes with values a program returned: bound what one operation may build.
_MAX_ITEMS = 1_000_000
_MAX_BITS = 1_000_000


class UnsupportedTest(ValueError):
    """A test snippet outside the subset the harness evaluates (see module docstring)."""


class _Failed(Exception):
    """A check that cannot pass: a probe failed, or an operation was refused."""


class _Pending:
    """A program value not known yet (while the probes are being listed)."""


_PENDING = _Pending()


def _pending(*values) -> bool:
    return any(v is _PENDING for v in values)


@dataclasses.dataclass(frozen=True)
class Probe:
    """One value the program must supply: `name` itself (args None) or `name(*args, **kwargs)`."""
    name: str
    args: tuple | None = None
    kwargs: dict | None = None

    def to_job(self) -> list:
        """The probe as the sandbox child reads it (args in sandbox_child's plain encoding)."""
        if self.args is None:
            return ["name", self.name, None, None]
        return ["call", self.name, sandbox_child.encode(list(self.args)),
                sandbox_child.encode(dict(self.kwargs))]


@dataclasses.dataclass(frozen=True)
class Test:
    """A compiled test: its statements and the probes it needs, by node."""
    source: str
    statements: tuple[ast.stmt, ...]
    probes: tuple[Probe, ...]
    probe_of: types.MappingProxyType  # id(ast node) -> index into probes


class _Evaluator:
    """Evaluates a test's statements. Without `values` it lists the probes (program values are
    _PENDING); with them it checks the asserts on the values the program gave."""

    def __init__(self, values: Sequence | None = None, probe_of=None):
        self.values, self.probe_of = values, probe_of
        self.probes: list[Probe] = []
        self.index: dict[int, int] = {}
        self.local: dict[str, Any] = {}

    @property
    def collecting(self) -> bool:
        return self.values is None

    def run(self, statements: Sequence[ast.stmt]) -> bool:
        """True when every assert holds (checking), or after listing the probes (collecting)."""
        for statement in statements:
            if isinstance(statement, ast.Pass):
                continue
            if isinstance(statement, ast.Assert):
                value = self.eval(statement.test)
                if not self.collecting and not value:
                    return False
            elif isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(
                    statement.targets[0], ast.Name):
                self.local[statement.targets[0].id] = self.eval(statement.value)
            elif isinstance(statement, ast.Expr):
                self.eval(statement.value)
            else:
                raise UnsupportedTest(f"statement {type(statement).__name__} at line {statement.lineno}")
        return True

    def _program_value(self, node: ast.AST, probe: Probe):
        if self.collecting:
            self.index[id(node)] = len(self.probes)
            self.probes.append(probe)
            return _PENDING
        found = self.values[self.probe_of[id(node)]]
        if isinstance(found, _Failed):
            raise found
        return found

    def _args(self, node: ast.Call) -> tuple[list, dict]:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise UnsupportedTest(f"*args or **kwargs in a call at line {node.lineno}")
        return [self.eval(a) for a in node.args], {k.arg: self.eval(k.value) for k in node.keywords}

    def _call(self, node: ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "math" \
                and func.attr in _SAFE_MATH and "math" not in self.local:
            function = _SAFE_MATH[func.attr]
        elif isinstance(func, ast.Name) and func.id in SAFE_FUNCTIONS and func.id not in self.local:
            function = SAFE_FUNCTIONS[func.id]
        elif isinstance(func, ast.Name) and func.id not in self.local:
            args, kwargs = self._args(node)
            if _pending(*args, *kwargs.values()):
                raise UnsupportedTest(f"the arguments of {func.id}() at line {node.lineno} use another "
                                      "program value")
            return self._program_value(node, Probe(func.id, tuple(args), kwargs))
        else:
            raise UnsupportedTest(f"a call of {ast.unparse(func)!r} at line {node.lineno}")
        args, kwargs = self._args(node)
        if _pending(*args, *kwargs.values()):
            return _PENDING
        return function(*args, **kwargs)

    def eval(self, node: ast.AST):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.local:
                return self.local[node.id]
            if node.id in SAFE_FUNCTIONS:
                return SAFE_FUNCTIONS[node.id]
            return self._program_value(node, Probe(node.id))
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "math" \
                and node.attr in _SAFE_MATH:
            return _SAFE_MATH[node.attr]
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.eval(e) for e in node.elts]
            if any(isinstance(e, ast.Starred) for e in node.elts):
                raise UnsupportedTest(f"a starred item at line {node.lineno}")
            if _pending(*items):
                return _PENDING
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise UnsupportedTest(f"** in a dict display at line {node.lineno}")
            items = [(self.eval(k), self.eval(v)) for k, v in zip(node.keys, node.values)]
            return _PENDING if _pending(*(v for pair in items for v in pair)) else dict(items)
        if isinstance(node, ast.UnaryOp):
            operand = self.eval(node.operand)
            return _PENDING if operand is _PENDING else _UNARY[type(node.op)](operand)
        if isinstance(node, ast.BinOp):
            left, right = self.eval(node.left), self.eval(node.right)
            if _pending(left, right):
                return _PENDING
            _check_size(node.op, left, right)
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.BoolOp):
            return self._bool_op(node)
        if isinstance(node, ast.Compare):
            values = [self.eval(node.left), *(self.eval(c) for c in node.comparators)]
            if _pending(*values):
                return _PENDING
            return all(_COMPARE[type(op)](a, b) for op, a, b in zip(node.ops, values, values[1:]))
        if isinstance(node, ast.IfExp):
            test = self.eval(node.test)
            if test is _PENDING:
                self.eval(node.body), self.eval(node.orelse)
                return _PENDING
            return self.eval(node.body if test else node.orelse)
        if isinstance(node, ast.Subscript):
            value, index = self.eval(node.value), self.eval(node.slice)
            return _PENDING if _pending(value, index) else value[index]
        if isinstance(node, ast.Slice):
            parts = [None if p is None else self.eval(p) for p in (node.lower, node.upper, node.step)]
            return _PENDING if _pending(*parts) else slice(*parts)
        raise UnsupportedTest(f"{type(node).__name__} at line {getattr(node, 'lineno', '?')}")

    def _bool_op(self, node: ast.BoolOp):
        if self.collecting:  # Every operand may be reached once values are known: list them all.
            values = [self.eval(v) for v in node.values]
            return _PENDING if _pending(*values) else (all(values) if isinstance(node.op, ast.And)
                                                        else any(values))
        value = None
        for operand in node.values:
            value = self.eval(operand)
            if bool(value) != isinstance(node.op, ast.And):
                return value
        return value


def _check_size(op: ast.operator, left, right) -> None:
    """Refuses operations on program values that would take the harness minutes or gigabytes."""
    if isinstance(left, int) and isinstance(right, int):
        if isinstance(op, ast.Pow) and left.bit_length() * abs(right) > _MAX_BITS \
                or isinstance(op, ast.LShift) and left.bit_length() + right > _MAX_BITS:
            raise _Failed(f"an integer of over {_MAX_BITS} bits")
    if isinstance(op, ast.Mult):
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, (str, list, tuple)) and isinstance(count, int) \
                    and len(sequence) * count > _MAX_ITEMS:
                raise _Failed(f"a repetition of over {_MAX_ITEMS} items")


def compile_test(source: str) -> Test:
    """Parses a test snippet and lists the program values it needs.

    Raises:
      UnsupportedTest: the snippet is not valid Python, or outside the subset (module docstring).
    """
    try:
        statements = tuple(ast.parse(source).body)
    except SyntaxError as e:
        raise UnsupportedTest(f"test does not parse: {e}") from None
    collector = _Evaluator()
    try:
        collector.run(statements)
    except UnsupportedTest:
        raise
    except Exception:  # noqa: BLE001 - an assert that fails without the program fails when checked.
        pass
    return Test(source, statements, tuple(collector.probes), types.MappingProxyType(collector.index))


def decode_value(line: str):
    """A probe's value from the child's serialised form; _Failed for anything malformed."""
    try:
        return sandbox_child.decode(json.loads(line))
    except (ValueError, TypeError, KeyError, RecursionError) as e:
        return _Failed(f"malformed value: {e}")


def passes(test: Test, values: Sequence) -> bool:
    """Whether `test` holds on its probes' `values` (each a decoded value or a _Failed)."""
    try:
        return _Evaluator(values, test.probe_of).run(test.statements)
    except Exception:  # noqa: BLE001 - any error while checking (a failed probe included) fails it.
        return False


def failed(reason: str) -> _Failed:
    """The value of a probe the program did not answer (raised, returned a non-plain value, or
    the run ended before it)."""
    return _Failed(reason)
