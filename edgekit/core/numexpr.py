"""Safe evaluation of simple number expressions such as ``1/127.5``, ``2/255`` or ``-0.5*2``.

Only numeric literals, unary +/- and the binary operators + - * / are allowed (parsed with
:mod:`ast`, never ``eval``); anything else raises :class:`ValueError`.

Example:
    >>> eval_number("1/127.5")
    0.00784313725490196
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return float(_UNARY[type(node.op)](_value(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return float(_BINARY[type(node.op)](_value(node.left), _value(node.right)))
    raise ValueError("not a simple number expression")


def eval_number(text: str) -> float:
    """The value of ``text`` (a number or + - * / of numbers); ValueError/ZeroDivisionError otherwise."""
    if len(text) > 100:
        raise ValueError("expression too long")
    tree = ast.parse(text.strip(), mode="eval")
    value = _value(tree.body)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value
