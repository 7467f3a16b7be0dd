"""Gradients and Hessians with respect to a vector print in NumPy's words (``pad``,
``diag``, ``eye``), not as ``scatter(...)`` of ``bands(...)``; and the printed text is the
truth: evaluated by NumPy itself, it gives what ``sg.evaluate`` gives."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg

XV = np.array([0.5, 1.0, 1.5, 2.0])


def _numpy_value(text: str, feeds: dict) -> np.ndarray:
    """Evaluate printed text (with its ``where`` block) by NumPy."""
    body, _, lets = text.partition("\nwhere\n")
    env = {"pad": np.pad, "diag": np.diag, "eye": np.eye, "exp": np.exp, "sum": np.sum,
           "reshape": np.reshape, "broadcast_to": np.broadcast_to, "zeros": np.zeros,
           "sin": np.sin, "cos": np.cos, **feeds}
    for line in lets.splitlines():
        name, _, value = line.strip().partition(" = ")
        env[name] = eval(value, env)  # noqa: S307 - our own printed formulas
    return np.asarray(eval(body, env))  # noqa: S307


def rosenbrock(x):
    return sg.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


CASES = {
    "rosenbrock grad": (lambda x: sg.grad(rosenbrock(x), x),
                        "pad(-400*t0*x[:3] - 2*(1 - x[:3]), (0, 1)) + pad(200*t0, (1, 0))"),
    "rosenbrock hessian": (lambda x: sg.hessian(rosenbrock(x), x), "diag(t0, 1) + diag("),
    "elementwise hessian": (lambda x: sg.hessian(sg.sum(x ** 3), x), "diag(6*x)"),
    "coupled hessian": (lambda x: sg.hessian(sg.sum(sg.exp(x) * x[0]), x), "diag("),
    "neighbour grad": (lambda x: sg.grad(sg.sum(sg.sin(x[1:] * x[:-1])), x), "pad("),
    "identity jacobian": (lambda x: sg.jacobian(2 * x, x), "2*eye(4)"),
    "shifted jacobian": (lambda x: sg.jacobian(x[1:] - x[:-1], x),
                         "eye(3, 4, k=1) + -1*eye(3, 4)"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_vector_derivatives_print_readably_and_truthfully(name):
    build, expect = CASES[name]
    x = sg.param("x", init=XV)
    d = build(x)
    text = str(d)
    assert "scatter(" not in text and "bands(" not in text, text
    assert expect in text, text
    np.testing.assert_allclose(_numpy_value(text, {"x": XV}), sg.evaluate(d), rtol=1e-12,
                               err_msg=text)
    np.testing.assert_allclose(sg.function(d)(), sg.evaluate(d), rtol=1e-12)  # compiled


def test_a_structure_numpy_cannot_name_keeps_its_own_text():
    # a vector band of a non-square matrix: np.diag is square, so no pretending
    from symgrad.expr.ops_band import band_matrix
    v = sg.input("v", (3,), dtype="float64")
    m = band_matrix((3, 4), [(v, 1, 0)])
    assert str(m).startswith("bands(v, (3, 4)")
