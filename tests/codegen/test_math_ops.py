"""The elementwise operators that are one stanza each (symgrad/expr/ops_math.py), on every
backend: NumPy's values at the special points (zeros of either sign, infinities, NaN,
halves, the ends of the domains, overflow thresholds) on the reference, LLVM and the CUDA
emulator; integers; derivatives against SymPy; ``stop_gradient``.

The per-operator tables (tests/expr/test_ops.py ``CASES``, tests/diff/diffhelp.py
``OP_CASES``) carry the ordinary cases through the shared parity and derivative tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from backend_cases import emulated  # noqa: F401 - the fixture

import symgrad as sg

F32, F64 = np.dtype("float32"), np.dtype("float64")
RTOL = {F32: 4e-7, F64: 1e-15}  # a few ulps: the reference is NumPy's own function


SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1.5, 2.5, -2.5, 1e-30, -1e-30, 0.999999, 3.0,
           19.9, 20.1, -20.1, 85.0, -85.0, 700.0, 710.0, 1e30, -1e30, 3e300, np.inf, -np.inf,
           np.nan, 2.0**29, 0.66, 0.67, 2.41, 2.42]


def _values(dtype) -> np.ndarray:
    with np.errstate(over="ignore"):
        v = np.array(SPECIAL, np.float64).astype(dtype)
    rng = np.random.default_rng(3)
    return np.concatenate([v, rng.uniform(-4, 4, 40).astype(dtype)])


def _unary(x):
    return {"arctan": sg.arctan(x), "arcsin": sg.arcsin(x), "arccos": sg.arccos(x),
            "sinh": sg.sinh(x), "cosh": sg.cosh(x), "arcsinh": sg.arcsinh(x),
            "arctanh": sg.arctanh(x), "log2": sg.log2(x), "log10": sg.log10(x),
            "cbrt": sg.cbrt(x), "floor": sg.floor(x), "ceil": sg.ceil(x), "rint": sg.rint(x),
            "round1": sg.round(x, 1), "round-1": sg.round(x, -1),
            "stop_gradient": sg.stop_gradient(x)}


def _binary(x, y):
    return {"arctan2": sg.arctan2(y, x), "logaddexp": sg.logaddexp(x, y),
            "fmod": sg.fmod(x, y), "mod": sg.mod(x, y)}


def _numpy(name: str, *v):
    f = {"round1": lambda a: np.round(a, 1), "round-1": lambda a: np.round(a, -1),
         "stop_gradient": lambda a: a}.get(name) or getattr(np, name)
    with np.errstate(all="ignore"):
        return f(*v)


def _check(got: dict, feeds: dict, dtype, what: str):
    for name, value in got.items():
        args = (feeds["y"], feeds["x"]) if name == "arctan2" else (
            (feeds["x"], feeds["y"]) if name in ("logaddexp", "fmod", "mod") else (feeds["x"],))
        want = _numpy(name, *args)
        assert value.dtype == want.dtype == dtype, (what, name)
        rtol = RTOL[dtype] * (8 if name in ("arctan2", "cbrt", "arcsin", "arccos") else 4)
        # a binary result may cancel (logaddexp(-0.5, -0.55) = 0.025 = -0.5 + 0.525): a few
        # ulps of the operands then, as NumPy's own formulas have it
        scale = sum(np.abs(a) for a in args) if len(args) == 2 else 0.0
        with np.errstate(invalid="ignore"):
            atol = np.where(np.isfinite(scale), rtol * scale, 0.0)
        bad = ~np.isclose(value, want, rtol=rtol, atol=atol, equal_nan=True)
        assert not bad.any(), (f"{what} {name}: at x={feeds['x'][bad][:5]}, "
                               f"y={feeds['y'][bad][:5]}: {value[bad][:5]} != {want[bad][:5]}")


def _run(backend, dtype):
    x, y = sg.input("x", dtype=dtype), sg.input("y", dtype=dtype)
    vx = _values(dtype)
    vy = np.roll(vx, 7)  # every pair of special values meets somewhere
    outs = {**_unary(x), **_binary(x, y)}
    xs = np.repeat(vx, len(vx))
    ys = np.tile(vx, len(vx))
    feeds = {"x": np.concatenate([vx, xs]), "y": np.concatenate([vy, ys])}
    names = list(outs)
    if backend == "reference":
        got = sg.evaluate(list(outs.values()), **feeds)
    else:
        got = sg.function(list(outs.values()), backend=backend)(**feeds)
    return dict(zip(names, got)), feeds


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_special_values_match_numpy(backend, dtype):
    got, feeds = _run(backend, dtype)
    _check(got, feeds, dtype, backend)


@pytest.mark.usefixtures("emulated")
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_special_values_match_numpy_on_the_cuda_emulator(dtype):
    got, feeds = _run("cuda", dtype)
    _check(got, feeds, dtype, "cuda")


@pytest.mark.parametrize("backend", ["reference", "llvm", "cuda"])
def test_integers_follow_numpy(backend, request):
    if backend == "cuda":
        request.getfixturevalue("emulated")
    a = np.array([-7, 7, -7, 7, 0, 5, -2**31, 9, -9, 123], np.int32)
    b = np.array([3, 3, -3, -3, 3, 0, -1, 1, 4, 7], np.int32)
    x, y = sg.input("x", dtype="int32"), sg.input("y", dtype="int32")
    outs = [sg.mod(x, y), sg.fmod(x, y), sg.floor(x), sg.ceil(x), sg.round(x, -1),
            sg.rint(x), sg.arctan(x)]
    assert [o.dtype for o in outs] == [np.int32] * 5 + [F64, F64]
    assert sg.floor(x) is x  # np.floor of an int is that int
    fn = (lambda **f: sg.evaluate(outs, **f)) if backend == "reference" else sg.function(
        outs, backend=backend)
    got = fn(x=a, y=b)
    with np.errstate(all="ignore"):
        want = [np.mod(a, b), np.fmod(a, b), a, a, np.round(a, -1), np.rint(a), np.arctan(a)]
    for g, w, name in zip(got, want, ["mod", "fmod", "floor", "ceil", "round", "rint", "at"]):
        assert g.dtype == w.dtype, name
        np.testing.assert_allclose(g, w, rtol=1e-15, err_msg=f"{backend} {name}")


def test_bool_remainders_are_refused_as_numpy_refuses_them():
    flags = sg.input("flags", dtype="bool")
    with pytest.raises(TypeError, match="NumPy has no mod of bool arrays"):
        sg.mod(flags, flags)


_SYMPY = {"arcsin": (sg.arcsin, sympy.asin), "arccos": (sg.arccos, sympy.acos),
          "arctan": (sg.arctan, sympy.atan), "sinh": (sg.sinh, sympy.sinh),
          "cosh": (sg.cosh, sympy.cosh), "arcsinh": (sg.arcsinh, sympy.asinh),
          "arctanh": (sg.arctanh, sympy.atanh), "log2": (sg.log2, lambda s: sympy.log(s, 2)),
          "log10": (sg.log10, lambda s: sympy.log(s, 10)),
          "cbrt": (sg.cbrt, lambda s: sympy.sign(s) * sympy.Abs(s) ** sympy.Rational(1, 3))}


@pytest.mark.parametrize("name", sorted(_SYMPY))
def test_first_and_second_derivatives_match_sympy(name):
    fn, sfn = _SYMPY[name]
    x = sg.input("x", shape=(), dtype="float64")
    s = sympy.Symbol("s", real=True)
    g = sg.grad(fn(x), x)
    h = sg.grad(g, x)
    for v in (-0.7, -0.2, 0.35, 0.8) if name not in ("log2", "log10") else (0.3, 1.7, 5.0):
        d1 = float(sympy.diff(sfn(s), s).subs(s, v).evalf())
        d2 = float(sympy.diff(sfn(s), s, 2).subs(s, v).evalf())
        np.testing.assert_allclose(sg.evaluate(g, x=np.float64(v)), d1, rtol=1e-12)
        np.testing.assert_allclose(sg.evaluate(h, x=np.float64(v)), d2, rtol=1e-10)


def test_binary_derivatives_match_sympy():
    a, b = sg.input("a", shape=(), dtype="float64"), sg.input("b", shape=(), dtype="float64")
    sa, sb = sympy.symbols("a b", real=True)
    for f, sf in ((sg.arctan2(a, b), sympy.atan2(sa, sb)),
                  (sg.logaddexp(a, b), sympy.log(sympy.exp(sa) + sympy.exp(sb))),
                  # Mod(a, b) = a - b*floor(a/b), floor's derivative 0 (SymPy leaves it
                  # unevaluated): written with the quotient's floor as a constant
                  (sg.mod(a, b), sa - sb * sympy.Integer(int(np.floor(-2.2 / 0.9))))):
        ga, gb = sg.grad(f, [a, b])
        points = ((-2.2, 0.9),) if f.op is sg.mod(a, b).op else (
            (0.7, -1.3), (-2.2, 0.9), (1.1, 0.4))
        for va, vb in points:
            at = {sa: va, sb: vb}
            for g, w in ((ga, sympy.diff(sf, sa)), (gb, sympy.diff(sf, sb))):
                np.testing.assert_allclose(sg.evaluate(g, a=np.float64(va), b=np.float64(vb)),
                                           float(w.subs(at).evalf()), rtol=1e-12, err_msg=sf)


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_stop_gradient_blocks_the_derivative_and_keeps_the_value(backend):
    x = sg.input("x", shape=(3,), dtype="float64")
    f = sg.sum(sg.stop_gradient(x) * x + sg.stop_gradient(x**3))
    (g,) = sg.grad(f, [x])
    j = sg.jacobian(sg.stop_gradient(x) * x, x)
    xs = np.array([0.5, -1.5, 2.0])
    fn = (lambda **f_: sg.evaluate([f, g], **f_)) if backend == "reference" else sg.function(
        [f, g], backend="llvm")
    value, grad = fn(x=xs)
    np.testing.assert_allclose(value, np.sum(xs * xs + xs**3), rtol=1e-14)
    np.testing.assert_allclose(grad, xs, rtol=1e-14)  # not 2x + 3x**2
    np.testing.assert_allclose(sg.evaluate(j, x=xs), np.diag(xs), rtol=1e-14)
    assert str(sg.stop_gradient(x) * 2) == "stop_gradient(x)*2"


def test_a_composite_becomes_one_cuda_device_function():
    from symgrad.codegen.cuda import render_cuda
    from symgrad.codegen.lower import lower

    x = sg.input("x", dtype="float64")
    source = render_cuda(lower([sg.arcsin(x) + sg.arcsin(x * 2)], target="gpu")).source
    assert source.count("double sg_c_arcsin_f64(double a0)") == 1  # defined once, called twice
    assert source.count("sg_c_arcsin_f64(") == 3 and "atan(" in source
    assert "sg_c_mod" not in source  # only the composites a program calls are defined
