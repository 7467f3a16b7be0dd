"""Printing: ``str(e)`` (readable infix, fewest parentheses), ``repr(e)`` and ``sg.latex(e)``.

The exact strings are written by hand. The property test reads a printed formula back as
Python (names bound to the leaf nodes and the functions) and asks for the very same node:
hash-consing makes that a check of every parenthesis.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import symgrad as sg

x, y, z = sg.inputs("x y z")
x1, x2 = sg.inputs("x1 x2")
u = sg.input("u", dtype="float64")
p, q, r = sg.inputs("p q r", dtype="bool")
X = sg.input("X", shape=("N", 3))
v = sg.input("v", shape=(5,))
x_train = sg.input("x_train")
w, b, w1, w2 = sg.params("w b w1 w2", init=0.5)
W = sg.param("W", shape=(3, 2), init=0.0)

LEAVES = {n.name: n for n in (x, y, z, x1, x2, u, p, q, r, X, v, x_train, w, b, w1, w2, W)}

FUNCTIONS = {
    name: getattr(sg, name)
    for name in ("exp", "log", "log1p", "expm1", "sqrt", "sin", "cos", "tan", "tanh", "erf",
                 "abs", "sign", "sigmoid", "relu", "gelu", "softplus", "maximum", "minimum",
                 "where", "equal", "not_equal", "sum", "mean", "max", "min", "logsumexp",
                 "softmax", "log_softmax", "reshape", "concat", "transpose", "broadcast_to")
}
CASTS = {dt: (lambda e, dt=dt: sg.cast(e, dt)) for dt in ("float32", "float64", "int32")}
NAMESPACE = {**LEAVES, **FUNCTIONS, **CASTS, "N": "N",
             "leaky_relu": sg.leaky_relu,
             "elu": lambda e, alpha: sg.elu(e, alpha)}


def read_back(text: str):
    return eval(text, {"__builtins__": {}}, dict(NAMESPACE))  # noqa: S307 - test oracle


# -- exact strings --------------------------------------------------------------------------
STR_CASES = [
    (lambda: w1 * x1 + w2 * x2 + b - y, "w1*x1 + w2*x2 + b - y"),
    (lambda: sg.mean((w1 * x1 - y) ** 2), "mean((w1*x1 - y)**2)"),
    (lambda: x - (y - z), "x - (y - z)"),
    (lambda: x - y - z, "x - y - z"),
    (lambda: x + (y + z), "x + (y + z)"),
    (lambda: x + (y - z), "x + (y - z)"),
    (lambda: x / (y * z), "x/(y*z)"),
    (lambda: x / y / z, "x/y/z"),
    (lambda: x * (y / z), "x*(y/z)"),
    (lambda: x * y / z, "x*y/z"),
    (lambda: -x**2, "-x**2"),
    (lambda: (-x) ** 2, "(-x)**2"),
    (lambda: x**y**z, "x**y**z"),
    (lambda: (x**y) ** z, "(x**y)**z"),
    (lambda: x ** (y * z), "x**(y*z)"),
    (lambda: (x + y) * z, "(x + y)*z"),
    (lambda: x + y * z, "x + y*z"),
    (lambda: -(x + y), "-(x + y)"),
    (lambda: -(x * y), "-(x*y)"),
    (lambda: -x * y, "-x*y"),
    (lambda: x - -y, "x - -y"),
    (lambda: 2 * x + 1, "2*x + 1"),
    (lambda: x * 0.5, "x*0.5"),
    (lambda: 2**x, "2**x"),
    (lambda: (2 * x) ** 2, "(2*x)**2"),
    (lambda: sg.exp(x) ** 2, "exp(x)**2"),
    (lambda: sg.exp(-x), "exp(-x)"),
    (lambda: sg.sigmoid(w * x + b), "sigmoid(w*x + b)"),
    (lambda: sg.maximum(x, 0), "maximum(x, 0)"),
    (lambda: sg.where(x > 0, x, 0.5 * x), "where(x > 0, x, 0.5*x)"),
    (lambda: x < y, "x < y"),
    (lambda: x >= 1.5, "x >= 1.5"),
    (lambda: (p < q) < r, "(p < q) < r"),
    (lambda: p < (q < r), "p < (q < r)"),
    (lambda: sg.sum(X, axis=1, keepdims=True), "sum(X, axis=1, keepdims=True)"),
    (lambda: sg.mean(X, axis=0), "mean(X, axis=0)"),
    (lambda: sg.sum(X, axis=(0, 1)), "sum(X)"),
    (lambda: sg.max(X, axis=-1), "max(X, axis=1)"),
    (lambda: X.T, "X.T"),
    (lambda: (X @ W).T, "(X@W).T"),
    (lambda: X @ W, "X@W"),
    (lambda: X[:, 0], "X[:, 0]"),
    (lambda: X[:, 1:], "X[:, 1:]"),
    (lambda: v[1:], "v[1:]"),
    (lambda: v[:3], "v[:3]"),
    (lambda: v[1:4], "v[1:4]"),
    (lambda: v[::2], "v[::2]"),
    (lambda: v[::-1], "v[::-1]"),
    (lambda: v[-1], "v[4]"),
    (lambda: (x + y)[None], "(x + y)[None]"),
    (lambda: sg.softmax(X, axis=1), "softmax(X, axis=1)"),
    (lambda: sg.log_softmax(X, axis=-1), "log_softmax(X, axis=1)"),
    (lambda: u + x, "u + float64(x)"),
    (lambda: x * u, "float64(x)*u"),
    (lambda: sg.concat([X, X], axis=1), "concat([X, X], axis=1)"),
    (lambda: sg.reshape(X, ("N", 1, 3)), "reshape(X, (N, 1, 3))"),
    (lambda: sg.const(-2.0) ** x, "(-2)**x"),
    (lambda: x * -2, "x*-2"),
    (lambda: x**-2, "x**-2"),
    (lambda: x**-y, "x**-y"),
    (lambda: x ** -(y**z), "x**-y**z"),
    (lambda: x ** (-y) ** z, "x**(-y)**z"),
    (lambda: 2 ** -x, "2**-x"),
    (lambda: x_train * 3, "x_train*3"),
]


@pytest.mark.parametrize("build, text", STR_CASES, ids=[c[1] for c in STR_CASES])
def test_str_exact(build, text):
    assert str(build()) == text


@pytest.mark.parametrize("build, text", STR_CASES, ids=[c[1] for c in STR_CASES])
def test_str_reads_back_to_the_same_node(build, text):
    e = build()
    assert read_back(str(e)) is e


def test_leaves_print_their_names():
    assert str(x) == "x"
    assert str(w1) == "w1"
    assert str(sg.const(2.5)) == "2.5"


def test_distinct_parameters_with_one_name_are_told_apart():
    a, a2 = sg.param("a"), sg.param("a")
    text = str(a + a2)
    left, right = text.split(" + ")
    assert left != right
    assert left.startswith("a") and right.startswith("a")


@pytest.mark.parametrize("value", [0.1, 1e-8, -0.110010765, 123456.79, 3.0e20, 0.3333333])
def test_float32_constants_print_exactly(value):
    e = x * value
    text = str(e)
    number = text.split("*", 1)[1]
    assert np.float32(float(number)) == np.float32(value), text
    assert read_back(text) is e


def test_float64_constants_print_exactly():
    e = u * 0.1
    assert float(str(e).split("*")[1]) == 0.1
    assert read_back(str(e)) is e


# -- shared subexpressions: printed once, under a name ---------------------------------
def test_repeated_squaring_prints_linearly():
    t = x
    for _ in range(40):
        t = t * t + t
    text = str(t)
    assert len(text) < 5000
    assert "\nwhere\n" in text
    assert "t0 = x*x + x" in text
    assert re.search(r"^  t1 = t0\*t0 \+ t0$", text, re.M)
    body = text.split("\nwhere\n")[0]
    assert len(body) < 40
    assert sg.latex(t).count("t_{0}") >= 1 and len(sg.latex(t)) < 10000


def test_small_repeats_are_inlined():
    e = sg.exp(x) * sg.exp(x)
    assert str(e) == "exp(x)*exp(x)"


def test_deep_chain_prints_without_recursion_error():
    t = x
    for _ in range(3000):
        t = sg.tanh(t)
    text = str(t)
    assert text.startswith("tanh(tanh(") and text.count("tanh(") == 3000
    assert sg.latex(t).count(r"\tanh") == 3000


# -- repr ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("e, fragments", [
    (x, ["x", "leaf", "float32", "(N,)"]),
    (x + y, ["add", "elementwise", "float32", "(N,)"]),
    (sg.sum(X, axis=1), ["sum", "reduce", "float32", "(N,)"]),
    (X @ W, ["matmul", "contract", "float32", "(N, 2)"]),
    (sg.mean(u), ["mean", "reduce", "float64", "()"]),
    (X.T, ["transpose", "shape", "float32", "(3, N)"]),
    (w, ["w", "leaf", "float32", "()"]),
    (p < q, ["less", "bool", "(N,)"]),
])
def test_repr_shows_kind_dtype_and_shape(e, fragments):
    text = repr(e)
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    assert "\n" not in text


# -- LaTeX ---------------------------------------------------------------------------------------
LATEX_CASES = [
    (lambda: x / y, r"\frac{x}{y}"),
    (lambda: x**2, "x^{2}"),
    (lambda: sg.sigmoid(w1 * x1) / 2, r"\frac{\sigma\left(w_{1} \cdot x_{1}\right)}{2}"),
    (lambda: w1 * x1 + b, r"w_{1} \cdot x_{1}+b"),
    (lambda: x_train, "x_{train}"),
    (lambda: sg.sqrt(x), r"\sqrt{x}"),
    (lambda: sg.abs(x), r"\left|x\right|"),
    (lambda: sg.exp(x), r"\exp\left(x\right)"),
    (lambda: sg.tanh(x), r"\tanh\left(x\right)"),
    (lambda: -x**2, "-x^{2}"),
    (lambda: (-x) ** 2, r"\left(-x\right)^{2}"),
    (lambda: (x**y) ** z, r"\left(x^{y}\right)^{z}"),
    (lambda: x - (y - z), r"x-\left(y-z\right)"),
    (lambda: (x + y) * z, r"\left(x+y\right) \cdot z"),
    (lambda: X.T, "X^{T}"),
    (lambda: x <= y, r"x \le y"),
    (lambda: x >= y, r"x \ge y"),
    (lambda: sg.sum(x), r"\operatorname{sum}\left(x\right)"),
    (lambda: sg.const(-2.0) ** x, r"\left(-2\right)^{x}"),
]


@pytest.mark.parametrize("build, text", LATEX_CASES, ids=[c[1] for c in LATEX_CASES])
def test_latex_exact(build, text):
    assert sg.latex(build()) == text


@pytest.mark.parametrize("e", [sg.leaky_relu(x), sg.log_softmax(X, axis=1),
                               sg.broadcast_to(w, ("N",)), sg.one_hot(
                                   sg.input("labels", dtype="int32"), 3)])
def test_latex_escapes_underscores_in_operator_names(e):
    assert not re.search(r"(?<!\\)_(?!\{)", sg.latex(e)), sg.latex(e)


def test_repr_latex_for_notebooks():
    assert (x / y)._repr_latex_() == r"$\frac{x}{y}$"


# -- random trees -------------------------------------------------------------------------
NUMBERS = [2, 3, 0.5, 1.5, -2, -0.5, 0.1, 1e-8]
BASE = [x, y, z, w, b]


def _unary(name):
    return lambda e: getattr(sg, name)(e)


UNARY = [
    ("neg", lambda e: -e), ("exp", _unary("exp")), ("log", _unary("log")),
    ("sqrt", _unary("sqrt")), ("sin", _unary("sin")), ("tanh", _unary("tanh")),
    ("sigmoid", _unary("sigmoid")), ("relu", _unary("relu")), ("abs", _unary("abs")),
    ("softplus", _unary("softplus")), ("leaky", lambda e: sg.leaky_relu(e, 0.2)),
    ("sum", _unary("sum")), ("mean", _unary("mean")), ("f64", lambda e: e + u),
    ("T", lambda e: e.T),
]
BINARY = [
    ("+", lambda a, c: a + c), ("-", lambda a, c: a - c), ("*", lambda a, c: a * c),
    ("/", lambda a, c: a / c), ("**", lambda a, c: a**c),
    ("max", lambda a, c: sg.maximum(a, c)),
    ("where", lambda a, c: sg.where(a > c, a, c)),
]

leaf_st = st.sampled_from(BASE)


def _extend(children):
    unary = st.builds(lambda op, e: op[1](e), st.sampled_from(UNARY), children)
    binary = st.builds(lambda op, a, c: op[1](a, c), st.sampled_from(BINARY), children,
                       children)
    left_number = st.builds(lambda op, n, c: op[1](n, c), st.sampled_from(BINARY[:5]),
                            st.sampled_from(NUMBERS), children)
    right_number = st.builds(lambda op, a, n: op[1](a, n), st.sampled_from(BINARY[:5]),
                             children, st.sampled_from(NUMBERS))
    return unary | binary | left_number | right_number


trees = st.recursive(leaf_st, _extend, max_leaves=10)


@settings(max_examples=50, deadline=None)
@given(e=trees)
def test_random_trees_read_back_to_the_same_node(e):
    text = str(e)
    assume("\nwhere\n" not in text)  # named shared parts are not Python
    assert read_back(text) is e, text


@settings(max_examples=50, deadline=None)
@given(e=trees)
def test_random_trees_print_without_redundant_outer_parentheses(e):
    text = str(e)
    if text.startswith("(") and text.endswith(")"):
        depth = 0  # the first "(" must close before the end
        for i, ch in enumerate(text):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                assert i < len(text) - 1, text
                break


@settings(max_examples=50, deadline=None)
@given(e=trees)
def test_random_trees_latex_never_raises_and_is_balanced(e):
    text = sg.latex(e)
    assert isinstance(text, str) and text
    assert text.count(r"\left") == text.count(r"\right")
    assert text.count("{") == text.count("}")
    assert "#" not in text and "**" not in text
    assert not re.search(r"(?<!\\)_(?!\{)", text), text


@settings(max_examples=30, deadline=None)
@given(e=trees)
def test_random_trees_shared_parts_read_back(e):
    # a where-block, read back name by name, is the same node too
    text = str(e)
    body, _, rest = text.partition("\nwhere\n")
    ns = dict(NAMESPACE)
    for line in rest.splitlines():
        name, _, definition = line.strip().partition(" = ")
        ns[name] = eval(definition, {"__builtins__": {}}, ns)  # noqa: S307
    assert eval(body, {"__builtins__": {}}, ns) is e  # noqa: S307
