"""Derivative conventions where the peers (autograd, JAX, PyTorch) agree: ties of
maximum/minimum, ``d/dy 0**y``, ``np.dot``'s meaning, Jacobians over empty axes. Each is
checked on ``sg.evaluate`` and on the compiled ``sg.function``, against finite differences
away from the special points and against the peers' value at them."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg

F64 = "float64"


def both(e, **feeds):
    """``e`` by the NumPy reference evaluator and by the compiled LLVM function."""
    ref = sg.evaluate(e, **feeds)
    got = sg.function(e)(**feeds)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    return ref


def fd(f, v, h=1e-6):
    """Central differences of scalar ``f`` at array ``v``."""
    out = np.zeros_like(v)
    for i in np.ndindex(v.shape):
        d = np.zeros_like(v)
        d[i] = h
        out[i] = (f(v + d) - f(v - d)) / (2 * h)
    return out


@pytest.mark.parametrize("build", [sg.maximum, sg.minimum])
def test_extremes_share_a_tie(build):
    x = sg.input("x", (4,), dtype=F64)
    xv = np.array([-1.0, 0.0, 0.5, 2.0])
    np.testing.assert_array_equal(both(sg.grad(sg.sum(build(x, x)), x), x=xv), np.ones(4))
    np.testing.assert_array_equal(both(sg.jacobian(build(x, x), x), x=xv), np.eye(4))
    # x against a constant: 1 where x wins, 0 where it loses, 1/2 at the tie (x == 0.5)
    g = both(sg.grad(sg.sum(build(x, 0.5)), x), x=xv)
    wins = (xv > 0.5) if build is sg.maximum else (xv < 0.5)
    np.testing.assert_array_equal(g, np.where(xv == 0.5, 0.5, wins.astype(float)))


def test_extremes_match_finite_differences_off_ties():
    a, b = sg.input("a", (3,), dtype=F64), sg.input("b", (3,), dtype=F64)
    av, bv = np.array([0.3, -1.0, 2.0]), np.array([1.0, -2.0, 0.5])
    f = sg.sum(sg.maximum(a, b) * np.array([1.0, 2.0, 3.0]) + sg.minimum(a, b) ** 2)
    ga, gb = both(sg.grad(f, [a, b])[0], a=av, b=bv), both(sg.grad(f, [a, b])[1], a=av, b=bv)
    np.testing.assert_allclose(ga, fd(lambda v: sg.evaluate(f, a=v, b=bv), av), rtol=1e-6)
    np.testing.assert_allclose(gb, fd(lambda v: sg.evaluate(f, a=av, b=v), bv), rtol=1e-6)


def test_relu_and_abs_keep_zero_at_the_kink():
    # PyTorch: relu'(0) = 0 and abs'(0) = 0; they are their own operators, not maximum
    x = sg.input("x", (3,), dtype=F64)
    xv = np.array([-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(both(sg.grad(sg.sum(sg.relu(x)), x), x=xv), [0, 0, 1])
    np.testing.assert_array_equal(both(sg.grad(sg.sum(sg.abs(x)), x), x=xv), [-1, 0, 1])


def test_power_in_the_exponent_at_a_zero_base():
    b = sg.input("b", (4,), dtype=F64)
    y = sg.input("y", (), dtype=F64)
    bv = np.array([0.0, 0.5, 2.0, -1.0])
    g = both(sg.jacobian(b ** y, y), b=bv, y=np.array(1.5))
    # 0**y is flat in y > 0 (every peer: 0); x > 0 is x**y*log(x); x < 0 is nan, as NumPy
    np.testing.assert_allclose(g[:3], [0.0, 0.5**1.5 * np.log(0.5), 2**1.5 * np.log(2)])
    assert np.isnan(g[3])
    gy = both(sg.grad(sg.sum(b[:3] ** y), y), b=bv, y=np.array(1.5))
    assert np.isfinite(gy)
    np.testing.assert_allclose(gy, fd(lambda v: sg.evaluate(sg.sum(b[:3] ** y), b=bv, y=v),
                                      np.array(1.5)), rtol=1e-6)


SHAPES = [((3,), (3,)), ((2, 3), (3, 4)), ((2, 3, 4), (4,)), ((4,), (2, 4, 5)),
          ((2, 3, 4), (4, 5)), ((2, 3, 4), (5, 4, 6)), ((3, 4), (2, 4, 5)),
          ((2, 2, 3, 4), (5, 4, 2))]


@pytest.mark.parametrize("sa,sb", SHAPES)
def test_dot_means_np_dot(sa, sb):
    rng = np.random.default_rng(0)
    av, bv = rng.normal(size=sa), rng.normal(size=sb)
    a, b = sg.input("a", sa, dtype=F64), sg.input("b", sb, dtype=F64)
    e = sg.dot(a, b)
    assert e.shape == np.dot(av, bv).shape
    np.testing.assert_allclose(both(e, a=av, b=bv), np.dot(av, bv), rtol=1e-12)
    # and its gradient is np.dot's (finite differences of the NumPy oracle)
    w = rng.normal(size=e.shape)
    f = sg.sum(e * w)
    ga = both(sg.grad(f, a), a=av, b=bv)
    np.testing.assert_allclose(ga, fd(lambda v: np.sum(np.dot(v, bv) * w), av), rtol=1e-6)


def test_dot_keeps_symbolic_batch_axes():
    a = sg.input("a", ("N", 3, 4), dtype=F64)
    b = sg.input("b", (5, 4, 6), dtype=F64)
    assert sg.dot(a, b).shape == ("N", 3, 5, 6)


@pytest.mark.parametrize("shape,axis", [((0,), None), ((2, 0), 1), ((0, 3), 0)])
def test_jacobian_over_an_empty_axis(shape, axis):
    z = sg.input("z", shape, dtype=F64)
    f = sg.sum(z, axis)
    jac = sg.jacobian(f, z)
    assert jac.shape == f.shape + shape
    got = both(jac, z=np.zeros(shape))
    assert got.shape == f.shape + shape and got.size == 0
