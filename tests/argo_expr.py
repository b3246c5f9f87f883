"""The part of Argo Rollouts' condition language (github.com/expr-lang/expr) that the chart's
AnalysisTemplate uses, to judge a measurement as the Argo controller would.

    judge({"successCondition": "result[0] <= 0.01", ...}, [0.0])  ->  "Successful"

`result` is the list of an instant query's values (Argo's prometheus provider). Understood:
numbers, true/false, result[i], len(result), isNaN(x), isInf(x), comparisons, &&/and, ||/or,
!/not, parentheses. Anything else raises UnsupportedCondition: a form this file does not
know must fail the test, never be guessed.

Judging (Argo's rules): the failure condition is checked first, then the success condition;
with both set and neither true the measurement is Inconclusive; with only a success
condition a false one is Failed. A condition that cannot be evaluated (result[0] of an empty
result: the query had no data) is an Error, which never passes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

TOKEN = re.compile(r"\s*(?:(?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|"
                   r"(?P<op>&&|\|\||<=|>=|==|!=|[<>!()\[\]])|(?P<name>[A-Za-z_]\w*))")
COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
           ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
FUNCTIONS = {"isNaN": math.isnan, "isInf": math.isinf}


class UnsupportedCondition(ValueError):
    """A condition outside the forms this evaluator understands."""


class EvaluationError(Exception):
    """The condition is understood but cannot be evaluated on this result (Argo: Error)."""


def tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise UnsupportedCondition(f"cannot read {text[pos:]!r} in {text!r}")
        out.append(match.group(match.lastgroup))
        pos = match.end()
    return out


Value = bool | float


class _Parser:
    """Recursive descent (or > and > not > comparison > term) into closures over `result`:
    the whole condition is read first, so an unknown form anywhere is refused, and then
    evaluated with && and || short-circuiting as expr does."""

    def __init__(self, text: str, result: list[float]):
        self.text, self.result, self.items, self.pos = text, result, tokens(text), 0

    def peek(self) -> str | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self, expected: str | None = None) -> str:
        item = self.peek()
        if item is None or (expected is not None and item != expected):
            raise UnsupportedCondition(f"expected {expected or 'more'} at token {self.pos} "
                                       f"of {self.text!r}")
        self.pos += 1
        return item

    def parse(self) -> Callable[[], Value]:
        node = self.disjunction()
        if self.peek() is not None:
            raise UnsupportedCondition(f"unexpected {self.peek()!r} in {self.text!r}")
        return node

    def disjunction(self) -> Callable[[], Value]:
        node = self.conjunction()
        while self.peek() in ("||", "or"):
            self.take()
            node = (lambda left, right: lambda: left() or right())(node, self.conjunction())
        return node

    def conjunction(self) -> Callable[[], Value]:
        node = self.negation()
        while self.peek() in ("&&", "and"):
            self.take()
            node = (lambda left, right: lambda: left() and right())(node, self.negation())
        return node

    def negation(self) -> Callable[[], Value]:
        if self.peek() in ("!", "not"):
            self.take()
            inner = self.negation()
            return lambda: not inner()
        return self.comparison()

    def comparison(self) -> Callable[[], Value]:
        left = self.term()
        if self.peek() in COMPARE:
            compare, right = COMPARE[self.take()], self.term()
            return lambda: compare(left(), right())
        return left

    def term(self) -> Callable[[], Value]:
        item = self.take()
        if item == "(":
            node = self.disjunction()
            self.take(")")
            return node
        if item in ("true", "false"):
            return lambda: item == "true"
        if item[0].isdigit():
            return lambda: float(item)
        if item == "result":
            self.take("[")
            index = self.take()
            if not index.isdigit():
                raise UnsupportedCondition(f"result[{index}] in {self.text!r}")
            self.take("]")
            return lambda: self.element(int(index))
        if item == "len":
            for expected in ("(", "result", ")"):
                self.take(expected)
            return lambda: float(len(self.result))
        if item in FUNCTIONS:
            self.take("(")
            function, argument = FUNCTIONS[item], self.disjunction()
            self.take(")")
            return lambda: function(argument())
        raise UnsupportedCondition(f"{item!r} in {self.text!r}")

    def element(self, index: int) -> float:
        if index >= len(self.result):  # Argo: the measurement errs (a query without data)
            raise EvaluationError(f"result[{index}] of a result with {len(self.result)} "
                                  f"values in {self.text!r}")
        return self.result[index]


def evaluate(condition: str, result: list[float]) -> bool:
    value = _Parser(condition, result).parse()()
    if not isinstance(value, bool):
        raise UnsupportedCondition(f"{condition!r} is not a true/false condition")
    return value


def judge(metric: dict, result: list[float]) -> str:
    """Successful, Failed, Inconclusive or Error, as Argo judges one measurement."""
    success, failure = metric.get("successCondition"), metric.get("failureCondition")
    if not success and not failure:
        raise UnsupportedCondition(f"metric {metric.get('name')!r} has no condition")
    try:
        if failure and evaluate(failure, result):
            return "Failed"
        if success:
            if evaluate(success, result):
                return "Successful"
            return "Inconclusive" if failure else "Failed"
        return "Successful"
    except EvaluationError:
        return "Error"
