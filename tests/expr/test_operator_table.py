"""The operator table, walked: every operator declares everything the stages need.

Each operator of ``ALL_OPS`` must have a public function (or the ``INTERNAL`` mark), a NumPy
evaluation, a derivative (or ``NOT_DIFFERENTIABLE``), a printing, and, when elementwise, a
SymPy spelling that ``from_sympy`` reads back to the same values (or ``NO_SYMPY``) and a
spelling or a decomposition in every backend (LLVM and CUDA), the decomposition coming down
to operators both spell. A new operator missing any of these fails here, by name.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from test_ops import CASES

import symgrad as sg
from symgrad.codegen.cuda_ops import CUDA_OPS
from symgrad.codegen.llvm import LLVM_OPS
from symgrad.codegen.lower import LOWERED_OPS
from symgrad.expr.decompose import expansion, primitives
from symgrad.expr.node import (
    ELEMENTWISE,
    INTERNAL,
    LEAF,
    NO_SYMPY,
    NOT_DIFFERENTIABLE,
    Expr,
    toposort,
)
from symgrad.expr.table import ALL_OPS, OPS_BY_NAME, Op

ELEMENTWISE_OPS = [op for op in ALL_OPS if op.kind == ELEMENTWISE]
FLOATS = (np.dtype("float32"), np.dtype("float64"))


def _sample(op):
    """A node of ``op`` over float64 scalars (its argument, if any, at the default)."""
    leaves = [sg.input(f"s{i}", shape=(), dtype="float64") for i in range(op.arity)]
    if op.name == "cast":
        return Expr(op, tuple(leaves), np.dtype("float32")), leaves
    if op.name == "where":
        return Expr(op, (leaves[0] > 0, leaves[1], leaves[2])), leaves
    arg = op.param[1] if op.param else None
    return Expr(op, tuple(leaves), op.param[2](arg) if op.param else None), leaves


def test_the_table_is_one_flat_enumeration():
    assert len(Op) == len(ALL_OPS) == len(OPS_BY_NAME)
    for op in ALL_OPS:
        assert getattr(Op, op.name) is op and Op[op.name] is op and repr(op) == f"Op.{op.name}"
    assert Op.add.has("commutative") and Op.add.has(ELEMENTWISE) and Op.sum.has("reduce")
    assert not Op.subtract.has("commutative") and Op.floor.has("zero_derivative")
    with pytest.raises(AttributeError, match="no operator 'arcsine'.*arcsin"):
        Op.arcsine  # noqa: B018


@pytest.mark.parametrize("op", ALL_OPS, ids=lambda op: op.name)
def test_every_operator_is_declared_end_to_end(op):
    missing = []
    if not op.has(INTERNAL) and not callable(getattr(sg, op.fn, None)):
        missing.append(f"a public function sg.{op.fn}")
    if op.kind != LEAF:
        if op.numpy is None:
            missing.append("a NumPy evaluation")
        if op.vjp is None and not op.has(NOT_DIFFERENTIABLE):
            missing.append("a derivative (vjp) or the NOT_DIFFERENTIABLE mark")
        if op.kind != ELEMENTWISE and op.jvp is None and not op.has(NOT_DIFFERENTIABLE):
            missing.append("a forward derivative (jvp)")
        if not (op.fn or op.infix):
            missing.append("a printing (fn or infix)")
    if op.kind == ELEMENTWISE:
        if op.sympy is None and not op.has(NO_SYMPY):
            missing.append("a SymPy spelling or the NO_SYMPY mark")
        for backend, table in (("LLVM", LLVM_OPS), ("CUDA", CUDA_OPS)):
            if op not in table and op.decompose is None:
                missing.append(f"a {backend} spelling or a decomposition")
        if not op.arity:
            missing.append("an arity")
    elif op.kind != LEAF and op not in LOWERED_OPS:
        missing.append("a lowering (codegen.lower.LOWERED_OPS)")
    if op.name not in CASES:
        missing.append("a case in tests/expr/test_ops.py")
    assert not missing, f"the operator {op.name!r} lacks " + ", ".join(missing)


@pytest.mark.parametrize("op", [op for op in ELEMENTWISE_OPS if op.decompose is not None],
                         ids=lambda op: op.name)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_a_decomposition_comes_down_to_what_every_backend_spells(op, dtype):
    arg = op.param[2](op.param[1]) if op.param else None
    graph, leaves = expansion(op, (dtype,) * op.arity, arg)
    assert graph.dtype == dtype
    assert op not in {n.op for n in toposort([graph])}, "a decomposition may not use itself"
    prims = primitives(op, (dtype,) * op.arity, arg)
    assert prims <= set(LLVM_OPS) & set(CUDA_OPS), sorted(p.name for p in prims)


def test_the_set_every_backend_must_spell_is_the_documented_one():
    """docs/architecture.md names these: every other elementwise operator decomposes."""
    native = {op.name for op in ELEMENTWISE_OPS if op.decompose is None}
    assert native == {op.name for op in LLVM_OPS} == {op.name for op in CUDA_OPS}
    assert {"arctan", "floor", "rint", "fmod"} <= native
    assert not {"sinh", "cosh", "log2", "log10", "ceil", "mod", "arcsin"} & native


_POINTS = [(-0.7, 0.4, 1.3), (0.3, -1.2, 0.6), (0.9, 0.8, -0.4)]


@pytest.mark.parametrize("op", [op for op in ELEMENTWISE_OPS if not op.has(NO_SYMPY)],
                         ids=lambda op: op.name)
def test_the_sympy_spelling_reads_back(op):
    """to_sympy, then from_sympy, gives the same values: the one spelling serves both."""
    e, leaves = _sample(op)
    s = sg.to_sympy(e)
    back = sg.from_sympy(s, {f"s{i}": x for i, x in enumerate(leaves)})
    for point in _POINTS:
        feeds = {f"s{i}": np.float64(v) for i, v in enumerate(point[:op.arity])}
        want = sg.evaluate(e, **feeds)
        sym = s.subs({sympy.Symbol(f"s{i}", real=True): v for i, v in enumerate(point)})
        got = sg.evaluate(back, **{k: v for k, v in feeds.items()
                                   if k in {n.name for n in toposort([back])}})
        rtol = 1e-7 if op.name == "cast" else 1e-12  # SymPy reads cast as x itself
        np.testing.assert_allclose(np.float64(got), np.float64(want), rtol=rtol,
                                   equal_nan=True, err_msg=f"{op.name}: {s}")
        if isinstance(sym, sympy.logic.boolalg.BooleanAtom):
            assert bool(sym) == bool(want), s
        elif np.isfinite(want) and op.name != "cast":  # SymPy's own value agrees too
            assert abs(complex(sym.evalf()) - float(want)) <= 1e-10 * (1 + abs(want)), s


def test_from_sympy_reads_the_new_functions():
    x, y = sg.input("x", shape=(), dtype="float64"), sg.input("y", shape=(), dtype="float64")
    for text, want in [("asin(x)", sg.arcsin(x)), ("atan2(y, x)", sg.arctan2(y, x)),
                       ("sinh(x) + cosh(y)", sg.sinh(x) + sg.cosh(y)),
                       ("floor(x) + ceiling(y)", sg.floor(x) + sg.ceil(y)),
                       ("Mod(x, y)", sg.mod(x, y)), ("asinh(x)*atanh(y)",
                                                      sg.arcsinh(x) * sg.arctanh(y))]:
        got = sg.from_sympy(sympy.sympify(text, locals={"x": sympy.Symbol("x", real=True),
                                                        "y": sympy.Symbol("y", real=True)}),
                            {"x": x, "y": y})
        feeds = {"x": np.float64(0.3), "y": np.float64(-0.6)}
        np.testing.assert_allclose(sg.evaluate(got, **feeds), sg.evaluate(want, **feeds),
                                   rtol=1e-14, err_msg=text)


def test_no_sympy_operators_say_so():
    x = sg.input("x", shape=(), dtype="float64")
    with pytest.raises(NotImplementedError, match="'rint' has no SymPy form"):
        sg.to_sympy(sg.rint(x))


def test_made_functions_read_as_written_ones():
    import inspect

    assert str(inspect.signature(sg.leaky_relu)) == "(x, negative_slope=0.01)"
    assert str(inspect.signature(sg.arctan2)) == "(a, b)"
    assert "Inverse sine" in sg.arcsin.__doc__ and sg.arcsin.__name__ == "arcsin"
    x = sg.input("x")
    assert sg.leaky_relu(x, negative_slope=0.2) is sg.leaky_relu(x, 0.2)
    with pytest.raises(TypeError, match=r"sg.arctan2\(a, b\): missing a required argument"):
        sg.arctan2(x)
    with pytest.raises(TypeError, match="sg.exp"):
        sg.exp(x, 2)


@pytest.mark.parametrize("op", [op for op in ELEMENTWISE_OPS if op.ufunc is not None],
                         ids=lambda op: op.name)
def test_the_stanzas_ufunc_builds_the_same_node(op):
    e, leaves = _sample(op)
    assert op.ufunc(*leaves) is getattr(sg, op.fn)(*leaves)

