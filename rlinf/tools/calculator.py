"""`calculator`: a safe arithmetic expression evaluator (never `eval`).

The expression is parsed with `ast.parse(mode="eval")` and walked over a whitelist: numeric literals,
`+ - * / // % **`, unary `+ -`, parentheses, the constants `pi` and `e` and a few functions of `math`.
Integers and decimal literals are exact (`fractions.Fraction`), so `123456789 * 987654321` and
`0.1 + 0.2` come out exact; functions such as `sqrt` and `log` give floats (exact `sqrt` of a perfect
square). Every intermediate value is bounded in size (`MAX_BITS` per numerator / denominator), checked
before a power or product is computed, so `9**9**9` is refused at once instead of eating the machine.
"""

from __future__ import annotations

import ast
import math
from fractions import Fraction
from typing import Callable, Dict, Union

from .base import TOOLS, ToolError, ToolResult

Number = Union[Fraction, float]

MAX_CHARS = 500  # longest expression accepted
MAX_NODES = 400  # most syntax-tree nodes accepted
MAX_BITS = 4096  # largest numerator / denominator of any value (about 1,233 decimal digits)
MAX_EXPONENT = 4096  # largest |exponent| of an exact power

_FUNCS: Dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt, "log": math.log, "log2": math.log2, "log10": math.log10, "exp": math.exp,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "atan": math.atan,
}
_EXACT_FUNCS = {"abs", "round", "floor", "ceil", "min", "max"}
_CONSTS: Dict[str, Number] = {"pi": math.pi, "e": math.e}


def _check_size(value: Number) -> Number:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolError(f"result is not a finite number ({value})")
        return value
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise ToolError(f"number too large (over {MAX_BITS} bits)")
    return value


def _power(base: Number, exp: Number) -> Number:
    if isinstance(exp, Fraction) and exp.denominator == 1 and isinstance(base, Fraction):
        n = exp.numerator
        if abs(n) > MAX_EXPONENT:
            raise ToolError(f"exponent too large (|{n}| > {MAX_EXPONENT})")
        bits = max(base.numerator.bit_length(), base.denominator.bit_length())
        if bits > 1 and (bits - 1) * abs(n) > MAX_BITS:
            raise ToolError(f"power too large (over {MAX_BITS} bits)")
        if base == 0 and n < 0:
            raise ToolError("division by zero (0 to a negative power)")
        return base ** n
    b, x = float(base), float(exp)
    if b < 0 and not x.is_integer():
        raise ToolError("complex result (negative number to a fractional power)")
    if b == 0 and x < 0:
        raise ToolError("division by zero (0 to a negative power)")
    try:
        return b ** x
    except OverflowError:
        raise ToolError("power too large for a float") from None


def _binop(op: ast.operator, a: Number, b: Number) -> Number:
    if isinstance(op, ast.Pow):
        return _power(a, b)
    if isinstance(op, ast.Mult) and isinstance(a, Fraction) and isinstance(b, Fraction):
        bits = max(a.numerator.bit_length() + b.numerator.bit_length(),
                   a.denominator.bit_length() + b.denominator.bit_length())
        if bits > MAX_BITS + 1:
            raise ToolError(f"number too large (over {MAX_BITS} bits)")
    if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
        raise ToolError("division by zero")
    if isinstance(op, ast.Add):
        return a + b
    if isinstance(op, ast.Sub):
        return a - b
    if isinstance(op, ast.Mult):
        return a * b
    if isinstance(op, ast.Div):
        return a / b
    if isinstance(op, ast.FloorDiv):
        return Fraction(math.floor(a / b))
    if isinstance(op, ast.Mod):
        return a % b
    raise ToolError(f"operator {type(op).__name__} is not allowed")


def _apply(name: str, args: list) -> Number:
    if name in _FUNCS:
        if len(args) != 1:
            raise ToolError(f"{name}() takes one argument")
        (x,) = args
        if name == "sqrt" and isinstance(x, Fraction) and x >= 0:
            num, den = math.isqrt(x.numerator), math.isqrt(x.denominator)
            if num * num == x.numerator and den * den == x.denominator:
                return Fraction(num, den)
        return _FUNCS[name](float(x))
    if name in ("min", "max"):
        if not args:
            raise ToolError(f"{name}() needs arguments")
        return min(args) if name == "min" else max(args)
    if len(args) != 1:
        raise ToolError(f"{name}() takes one argument")
    (x,) = args
    if name == "abs":
        return abs(x)
    return Fraction({"round": round, "floor": math.floor, "ceil": math.ceil}[name](x))


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ToolError(f"only numbers are allowed, not {value!r}")
        # float literals are exact decimals: Fraction(repr(0.1)) == 1/10
        return _check_size(Fraction(repr(value)) if isinstance(value, float) else Fraction(value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return _check_size(_binop(node.op, _eval(node.left), _eval(node.right)))
    if isinstance(node, ast.Name):
        if node.id in _CONSTS:
            return _CONSTS[node.id]
        raise ToolError(f"unknown name '{node.id}'")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise ToolError("only plain calls of the allowed functions; attribute access is not allowed")
        name = node.func.id
        if name not in _FUNCS and name not in _EXACT_FUNCS:
            raise ToolError(f"unknown function '{name}'; allowed: {', '.join(sorted(_FUNCS) + sorted(_EXACT_FUNCS))}")
        return _check_size(_apply(name, [_eval(a) for a in node.args]))
    raise ToolError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def format_number(value: Number) -> str:
    """Exact text of a value: an integer, a terminating decimal, or else a float's repr."""
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else repr(value)
    if value.denominator == 1:
        return str(value.numerator)
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        return repr(float(value))
    places = max(twos, fives)
    scaled = abs(value.numerator) * (10 ** places // value.denominator)
    digits = str(scaled).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def evaluate(expression: str) -> Number:
    """Value of an arithmetic `expression`; ToolError on anything outside the whitelist or the bounds."""
    expression = expression.strip()
    if not expression:
        raise ToolError("empty expression")
    if len(expression) > MAX_CHARS:
        raise ToolError(f"expression too long ({len(expression)} > {MAX_CHARS} characters)")
    expression = expression.replace("^", "**").replace("×", "*").replace("÷", "/")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError(f"expression too complex (over {MAX_NODES} syntax nodes)")
    return _eval(tree)


@TOOLS.register("calculator", "calc")
def calculator(text: str, **_: object) -> ToolResult:
    """Evaluate an arithmetic expression: `12*(3+4)` -> `84`."""
    return ToolResult(True, output=format_number(evaluate(text)))
