"""A structural zero stays zero: the Jacobian of a standard deviation over a length-1 axis
is 0, as its gradient is (the function is constant), not 0*inf = nan. Checked against
sg.grad and finite differences, on the reference and the LLVM backend."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg


def std(x, axis):
    return sg.sqrt(sg.mean((x - sg.mean(x, axis=axis, keepdims=True)) ** 2, axis=axis))


def fd_jacobian(f, v, h=1e-6):
    """Central differences of array-valued ``f`` at ``v``: shape f(v).shape + v.shape."""
    out = np.zeros(np.shape(f(v)) + v.shape)
    for i in np.ndindex(v.shape):
        d = np.zeros_like(v)
        d[i] = h
        out[(...,) + i] = (f(v + d) - f(v - d)) / (2 * h)
    return out


@pytest.mark.parametrize("shape,axis", [((1,), 0), ((1,), None), ((3, 1), 1), ((1, 4), 0),
                                        ((2, 1, 3), 1), ((3, 2), 1)])
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_jacobian_of_std_agrees_with_grad(shape, axis, backend):
    x = sg.input("x", shape, dtype="float64")
    s = std(x, axis)
    xv = np.random.default_rng(0).uniform(0.5, 2.0, shape)
    jac = sg.function(sg.jacobian(s, x), backend=backend)(x=xv)
    grad = sg.function(sg.grad(sg.sum(s), x), backend=backend)(x=xv)
    want = fd_jacobian(lambda v: sg.evaluate(s, x=v), xv)
    np.testing.assert_allclose(jac, want, rtol=1e-6, atol=1e-8)
    # the gradient of the sum is the Jacobian summed over the outputs
    np.testing.assert_allclose(grad, want.reshape((-1,) + shape).sum(0), rtol=1e-6,
                               atol=1e-8)
    assert np.isfinite(jac).all()


def test_hessian_of_std_over_one_element_is_zero():
    x = sg.input("x", (1,), dtype="float64")
    h = sg.hessian(sg.sum(std(x, 0)), x)
    assert str(h) == "broadcast_to(0, (1, 1))"


@pytest.mark.parametrize("build,want", [
    (lambda z, v: sg.mean(z, axis=1), "broadcast_to(0, (2,))"),
    (lambda z, v: sg.sum(z, axis=0) / sg.sqrt(v), "broadcast_to(0, (3,))"),
    (lambda z, v: sg.transpose(z) * sg.reshape(v, (3, 1)), "broadcast_to(0, (3, 2))"),
    (lambda z, v: z @ sg.reshape(v, (3, 1)), "broadcast_to(0, (2, 1))"),
])
def test_zeros_pass_through_reductions_products_and_transposes(build, want):
    v = sg.input("v", (3,), dtype="float64")
    z = sg.broadcast_to(sg.const(np.zeros(1)), (2, 3))
    assert str(sg.simplify(build(z, v))) == want


def test_a_sum_of_a_broadcast_over_some_axes_counts_them():
    s = sg.input("s", (), dtype="float64")
    e = sg.sum(sg.broadcast_to(s, (2, 3, 4)), axis=(0, 2))
    simple = sg.simplify(e)
    assert "sum" not in str(simple)
    np.testing.assert_allclose(sg.evaluate(simple, s=1.5), np.full(3, 12.0))
    np.testing.assert_allclose(sg.evaluate(e, s=1.5), np.full(3, 12.0))
