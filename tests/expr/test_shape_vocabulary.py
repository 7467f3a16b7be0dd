"""NumPy's shape vocabulary on expressions (symgrad/expr/shape_vocabulary.py and
einsum_lowering.py): ``einsum``, ``tensordot``, ``outer``, ``stack``, ``split``,
``squeeze``, ``expand_dims``, ``ravel``/``flatten``, ``.size``, ``len()``, ``diagonal``,
``trace``, ``tril``/``triu``, ``pad``.

Values against NumPy on the reference, LLVM and the CUDA emulator; derivatives against
finite differences; a symbolic ``N`` (a new ``N`` never recompiles); NumPy's protocol
(``np.einsum(...)`` on expressions); errors that name what was expected and given.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.runtime import jit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "diff"))
from diffhelp import assert_close_fd, fd_grad, fd_hessian  # noqa: E402

RNG = np.random.default_rng(0)
A34 = RNG.standard_normal((3, 4))
B245 = RNG.standard_normal((2, 4, 5))
S33 = RNG.standard_normal((3, 3))
V3, V4 = RNG.standard_normal(3), RNG.standard_normal(4)
ARRAYS = {"a": A34, "b": B245, "s": S33, "u": V3, "v": V4}


def _inputs():
    return {k: sg.input(k, shape=v.shape, dtype="float64") for k, v in ARRAYS.items()}


# (name, symgrad builder, NumPy's own): one table serves every backend and the derivatives
def _cases():
    return [
        ("einsum_matmul", lambda e: sg.einsum("ij,jk->ik", e["a"].T, e["a"]),
         lambda n: np.einsum("ij,jk->ik", n["a"].T, n["a"])),
        ("einsum_batch", lambda e: sg.einsum("bij,j->bi", e["b"], e["b"][0, 0]),
         lambda n: np.einsum("bij,j->bi", n["b"], n["b"][0, 0])),
        ("einsum_trace", lambda e: sg.einsum("ii", e["s"]), lambda n: np.einsum("ii", n["s"])),
        ("einsum_diag", lambda e: sg.einsum("ii->i", e["s"]),
         lambda n: np.einsum("ii->i", n["s"])),
        ("einsum_implicit", lambda e: sg.einsum("ij,jk", e["a"], e["b"][0]),
         lambda n: np.einsum("ij,jk", n["a"], n["b"][0])),
        ("einsum_three", lambda e: sg.einsum("i,ij,j->", e["u"], e["a"], e["v"]),
         lambda n: np.einsum("i,ij,j->", n["u"], n["a"], n["v"])),
        ("einsum_ellipsis", lambda e: sg.einsum("...j,bjk->...bk", e["a"], e["b"]),
         lambda n: np.einsum("...j,bjk->...bk", n["a"], n["b"])),
        ("einsum_outer", lambda e: sg.einsum("i,j->ji", e["u"], e["v"]),
         lambda n: np.einsum("i,j->ji", n["u"], n["v"])),
        ("tensordot2", lambda e: sg.tensordot(e["b"], e["b"], ([1, 2], [1, 2])),
         lambda n: np.tensordot(n["b"], n["b"], ([1, 2], [1, 2]))),
        ("tensordot1", lambda e: sg.tensordot(e["a"], e["b"], ([1], [1])),
         lambda n: np.tensordot(n["a"], n["b"], ([1], [1]))),
        ("tensordot_int", lambda e: sg.tensordot(e["a"], e["b"][0], 1),
         lambda n: np.tensordot(n["a"], n["b"][0], 1)),
        ("outer", lambda e: sg.outer(e["a"], e["u"]), lambda n: np.outer(n["a"], n["u"])),
        ("stack", lambda e: sg.stack([e["a"], 2 * e["a"]], axis=-1),
         lambda n: np.stack([n["a"], 2 * n["a"]], axis=-1)),
        ("split_sections", lambda e: sg.split(e["a"], 2, axis=1)[1],
         lambda n: np.split(n["a"], 2, axis=1)[1]),
        ("split_indices", lambda e: sg.split(e["b"], [1, 3], axis=1)[2],
         lambda n: np.split(n["b"], [1, 3], axis=1)[2]),
        ("squeeze", lambda e: sg.squeeze(e["b"][:, :1]), lambda n: np.squeeze(n["b"][:, :1])),
        ("expand_dims", lambda e: sg.expand_dims(e["a"], (0, -1)),
         lambda n: np.expand_dims(n["a"], (0, -1))),
        ("ravel", lambda e: e["b"].ravel(), lambda n: n["b"].ravel()),
        ("diagonal", lambda e: e["a"].diagonal(1), lambda n: n["a"].diagonal(1)),
        ("diagonal_axes", lambda e: sg.diagonal(e["b"], -1, 2, 1),
         lambda n: np.diagonal(n["b"], -1, 2, 1)),
        ("trace", lambda e: e["b"].trace(0, 1, 2), lambda n: n["b"].trace(0, 1, 2)),
        ("tril", lambda e: sg.tril(e["b"], -1), lambda n: np.tril(n["b"], -1)),
        ("triu", lambda e: sg.triu(e["a"], 1), lambda n: np.triu(n["a"], 1)),
        ("pad", lambda e: sg.pad(e["a"], ((1, 0), (2, 1)), constant_values=((1, 2), (3, 4))),
         lambda n: np.pad(n["a"], ((1, 0), (2, 1)), constant_values=((1, 2), (3, 4)))),
        ("pad_int", lambda e: sg.pad(e["u"], 2, constant_values=-1.5),
         lambda n: np.pad(n["u"], 2, constant_values=-1.5)),
    ]


CASES = _cases()
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name, build, numpy", CASES, ids=IDS)
def test_values_against_numpy_on_the_reference(name, build, numpy):
    got = sg.evaluate(build(_inputs()), **ARRAYS)
    want = numpy(ARRAYS)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_every_case_on_each_backend(backend):
    """All cases in one compiled function per backend (llvm, numpy, the CUDA emulator)."""
    e = _inputs()
    outs = [build(e) for _, build, _ in CASES]
    got = sg.function(outs, backend=backend)(**ARRAYS)
    for (name, _, numpy), g in zip(CASES, got):
        np.testing.assert_allclose(g, numpy(ARRAYS), rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("name, build, numpy", CASES, ids=IDS)
def test_derivatives_against_finite_differences(name, build, numpy):
    e = _inputs()
    out = build(e)
    weights = sg.const(np.linspace(-1.0, 2.0, max(out.size, 1)).reshape(out.shape))
    loss = sg.sum(out * weights)
    for key in sorted({n.name for n in out.walk() if n.name}):
        got = sg.evaluate(sg.grad(loss, e[key]), **ARRAYS)
        assert_close_fd(got, fd_grad(loss, e[key], ARRAYS), what=f"{name} d/d{key}")


def test_hessian_through_the_compositions():
    """Second derivatives (forward over reverse) of einsum, stack, pad, diagonal, tril."""
    w = sg.input("w", shape=(3,), dtype="float64")
    M = sg.const(S33)
    q = sg.einsum("i,ij,j->", w, M, w) + sg.trace(sg.tril(sg.outer(w, sg.sin(w))))
    q = q + sg.sum(sg.pad(sg.stack([w, w**3]), 1, constant_values=0.5) ** 2)
    q = q + sg.sum(sg.tensordot(sg.expand_dims(w, 1), w[None, :] ** 2, 1).diagonal(1))
    feeds = {"w": V3}
    got = sg.evaluate(sg.hessian(q, w), **feeds)
    assert_close_fd(got, fd_hessian(q, w, feeds), rtol=1e-4, atol=1e-5)


# -- einsum over random subscripts ---------------------------------------------------------

@st.composite
def einsum_specs(draw):
    """Two operands over the letters i j k l (sizes 1..3), an explicit or implicit output."""
    letters = "ijkl"
    sizes = {c: draw(st.integers(1, 3)) for c in letters}
    terms = ["".join(draw(st.lists(st.sampled_from(letters), min_size=0, max_size=3)))
             for _ in range(2)]
    seen = sorted(set("".join(terms)))
    if draw(st.booleans()):
        out = "->" + "".join(draw(st.permutations(seen))[:draw(st.integers(0, len(seen)))])
    else:
        out = ""
    shapes = [tuple(sizes[c] for c in t) for t in terms]
    return ",".join(terms) + out, shapes


@settings(max_examples=60, deadline=None)
@given(einsum_specs(), st.integers(0, 2**31))
def test_einsum_random_subscripts_against_numpy(spec, seed):
    subscripts, shapes = spec
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in shapes]
    xs = [sg.input(f"e{i}", shape=s, dtype="float64") for i, s in enumerate(shapes)]
    want = np.einsum(subscripts, *arrays)
    got = sg.evaluate(sg.einsum(subscripts, *xs), **{f"e{i}": a for i, a in enumerate(arrays)})
    assert got.shape == want.shape, subscripts
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=subscripts)


def _random_specs(count: int, seed: int) -> list[tuple[str, list[tuple]]]:
    """Random einsum calls: 1 to 3 operands over i j k (sizes 1..3), some with '...'."""
    rng = np.random.default_rng(seed)
    specs = []
    while len(specs) < count:
        sizes = {c: int(rng.integers(1, 4)) for c in "ijk"}
        ell = tuple(int(d) for d in rng.integers(1, 3, int(rng.integers(0, 3))))
        terms, shapes = [], []
        for _ in range(int(rng.integers(1, 4))):
            t = "".join(rng.choice(list("ijk"), int(rng.integers(0, 4))))
            dots = bool(rng.integers(0, 2))
            terms.append(("..." if dots else "") + t)
            shapes.append((ell if dots else ()) + tuple(sizes[c] for c in t))
        seen = sorted(set("".join(terms).replace(".", "")))
        out = "".join(rng.permutation(seen)[:int(rng.integers(0, len(seen) + 1))])
        arrow = "" if rng.integers(0, 3) == 0 else "->" + ("..." if ell else "") + out
        specs.append((",".join(terms) + arrow, shapes))
    return specs


def test_random_einsum_calls_on_llvm():
    """40 random calls (ellipses, 1 to 3 operands, implicit outputs) in one function."""
    specs = _random_specs(40, seed=5)
    rng = np.random.default_rng(6)
    feeds, outs, wants = {}, [], []
    for n, (subscripts, shapes) in enumerate(specs):
        arrays = [rng.standard_normal(s) for s in shapes]
        xs = []
        for i, a in enumerate(arrays):
            feeds[f"r{n}_{i}"] = a
            xs.append(sg.input(f"r{n}_{i}", shape=a.shape, dtype="float64"))
        outs.append(sg.einsum(subscripts, *xs))
        wants.append(np.einsum(subscripts, *arrays))
    ref = sg.evaluate(outs, **feeds)
    got = sg.function(outs, backend="llvm")(**feeds)
    for (subscripts, _), g, r, w in zip(specs, got, ref, wants):
        np.testing.assert_allclose(r, w, rtol=1e-12, atol=1e-12, err_msg=subscripts)
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=subscripts)


def test_einsum_is_the_matmul_it_means():
    """Lowered to matmul: ``"ni,ij->nj"`` is the very node ``X @ W``."""
    X, Y = sg.input("X", shape=("N", 3)), sg.input("Y", shape=("N", 4))
    W = sg.input("W", shape=(3, 4))
    assert sg.einsum("ni,ij->nj", X, W) is X @ W
    assert sg.einsum("ni,nj->ij", X, Y) is X.T @ Y
    assert sg.einsum("nj,ij->ni", Y, W) is Y @ W.T
    assert sg.tensordot(X, Y, ([0], [0])) is X.T @ Y


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(-3, 3),
       st.integers(0, 2), st.integers(0, 2**31))
def test_conveniences_over_random_shapes(shape, k, width, seed):
    a = np.random.default_rng(seed).standard_normal(shape)
    x = sg.input("x", shape=a.shape, dtype="float64")
    axis = k % a.ndim
    outs = {"pad": (sg.pad(x, ((width, 1),) * a.ndim, constant_values=k),
                    np.pad(a, ((width, 1),) * a.ndim, constant_values=k)),
            "stack": (sg.stack([x, x + 1], axis=axis), np.stack([a, a + 1], axis=axis)),
            "split": (sg.split(x, [1, width + 1], axis=axis)[-1],
                      np.split(a, [1, width + 1], axis=axis)[-1]),
            "expand": (sg.expand_dims(x, axis), np.expand_dims(a, axis)),
            "tril": (sg.tril(x, k), np.tril(a, k)), "triu": (sg.triu(x, k), np.triu(a, k))}
    if a.ndim >= 2:
        outs["diagonal"] = (sg.diagonal(x, k, axis, (axis + 1) % a.ndim),
                            np.diagonal(a, k, axis, (axis + 1) % a.ndim))
        outs["trace"] = (sg.trace(x, k), np.trace(a, k))
    got = sg.evaluate([v[0] for v in outs.values()], x=a)
    for (name, (_, want)), g in zip(outs.items(), got):
        assert g.shape == want.shape, name
        np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12, err_msg=name)


# -- a symbolic N ------------------------------------------------------------------------

SYMBOLIC = {
    "ni,ij->nj": lambda X, W, Y: sg.einsum("ni,ij->nj", X, W),
    "in,ij->nj": lambda X, W, Y: sg.einsum("in,ij->nj", X.T, W),
    "ni,nj->ij": lambda X, W, Y: sg.einsum("ni,nj->ij", X, Y),
    "nij,njk->nik": lambda X, W, Y: sg.einsum("nij,njk->nik", sg.stack([X, X], 1),
                                              sg.stack([Y, Y, Y], 1)),
    "ni,nj->nij": lambda X, W, Y: sg.einsum("ni,nj->nij", X, Y),
    "nik,ij->nkj": lambda X, W, Y: sg.einsum("nik,ij->nkj", sg.stack([X, X], -1), W),
    "ni,nj->": lambda X, W, Y: sg.einsum("ni,nj->", X, Y),
    "ni,ni->": lambda X, W, Y: sg.einsum("ni,ni->", X, Y),  # a product and a sum
    "nik,nik->k": lambda X, W, Y: sg.einsum("nik,nik->k", sg.stack([X, Y], -1),
                                            sg.stack([Y, X], -1)),
    "ij,nik->njk": lambda X, W, Y: sg.einsum("ij,nik->njk", W, sg.stack([X, Y], -1)),
    "tensordot": lambda X, W, Y: sg.tensordot(X, Y, ([0], [0])),
    "stack": lambda X, W, Y: sg.stack([X, -X]),
    "split": lambda X, W, Y: sg.split(X, [1], axis=1)[1],
    "split_batch": lambda X, W, Y: sg.split(X, [1])[1],
    "pad": lambda X, W, Y: sg.pad(X, ((0, 0), (1, 2)), constant_values=0.5),
    "squeeze": lambda X, W, Y: sg.squeeze(sg.expand_dims(X, 1), 1),
    "ravel": lambda X, W, Y: X[:, :1].ravel(),
    "tril": lambda X, W, Y: sg.tril(sg.stack([X, X, X], 1)),
    "diagonal": lambda X, W, Y: sg.diagonal(sg.stack([X, X, X], 1), 0, 1, 2),
}
_SYM_NP = {
    "ni,ij->nj": lambda X, W, Y: X @ W,
    "in,ij->nj": lambda X, W, Y: X @ W,
    "ni,nj->ij": lambda X, W, Y: X.T @ Y,
    "nij,njk->nik": lambda X, W, Y: np.stack([X, X], 1) @ np.stack([Y, Y, Y], 1),
    "ni,nj->nij": lambda X, W, Y: X[:, :, None] * Y[:, None, :],
    "nik,ij->nkj": lambda X, W, Y: np.einsum("nik,ij->nkj", np.stack([X, X], -1), W),
    "ni,nj->": lambda X, W, Y: (X.sum(1) * Y.sum(1)).sum(),
    "ni,ni->": lambda X, W, Y: (X * Y).sum(),
    "nik,nik->k": lambda X, W, Y: np.array([(X * Y).sum()] * 2),
    "ij,nik->njk": lambda X, W, Y: np.einsum("ij,nik->njk", W, np.stack([X, Y], -1)),
    "tensordot": lambda X, W, Y: X.T @ Y,
    "stack": lambda X, W, Y: np.stack([X, -X]),
    "split": lambda X, W, Y: X[:, 1:],
    "split_batch": lambda X, W, Y: X[1:],
    "pad": lambda X, W, Y: np.pad(X, ((0, 0), (1, 2)), constant_values=0.5),
    "squeeze": lambda X, W, Y: X,
    "ravel": lambda X, W, Y: X[:, 0],
    "tril": lambda X, W, Y: np.tril(np.stack([X, X, X], 1)),
    "diagonal": lambda X, W, Y: np.diagonal(np.stack([X, X, X], 1), 0, 1, 2),
}


def _symbolic():
    X = sg.input("X", shape=("N", 3), dtype="float64")
    Y = sg.input("Y", shape=("N", 3), dtype="float64")
    W = sg.const(np.arange(12.0).reshape(3, 4) / 7)
    return X, W, Y


def test_symbolic_batch_on_llvm_never_recompiles():
    X, W, Y = _symbolic()
    outs = [f(X, W, Y) for f in SYMBOLIC.values()]
    assert outs[0].shape == ("N", 4) and outs[list(SYMBOLIC).index("stack")].shape == (
        2, "N", 3)
    fn = sg.function(outs, backend="llvm")
    compiles = jit.stats.compile_count
    for n in (1, 4, 9):
        rng = np.random.default_rng(n)
        x, y = rng.standard_normal((n, 3)), rng.standard_normal((n, 3))
        ref = sg.evaluate(outs, X=x, Y=y)
        for name, g, r in zip(SYMBOLIC, fn(X=x, Y=y), ref):
            want = _SYM_NP[name](x, W.arg.array, y)
            np.testing.assert_allclose(r, want, rtol=1e-12, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-12, err_msg=name)
    assert jit.stats.compile_count == compiles  # a new N never recompiles


@pytest.mark.usefixtures("backend")
def test_symbolic_einsum_gradient_on_each_backend(backend):
    X = sg.input("X", shape=("N", 3), dtype="float64")
    W = sg.param("W", shape=(3, 2), init=np.arange(6.0).reshape(3, 2) / 5, dtype="float64")
    loss = sg.sum(sg.tanh(sg.einsum("ni,ij->nj", X, W)) * sg.stack([X[:, 0], X[:, 1]], 1))
    x = np.random.default_rng(2).standard_normal((5, 3))
    got = sg.function([loss, sg.grad(loss, W)], backend=backend)(X=x)[1]
    assert_close_fd(got, fd_grad(loss, W, {"X": x}), what=backend)


# -- conveniences: size, len, the protocol -------------------------------------------------

def test_size_and_len():
    a = sg.input("a", shape=(3, 4))
    X = sg.input("X", shape=("N", 3))
    assert a.size == 12 and len(a) == 3 and sg.input("s", shape=()).size == 1
    assert len(sg.input("Z", shape=(2, "N"))) == 2
    with pytest.raises(TypeError, match=r"shape \(N, 3\).*dimension N is symbolic"):
        X.size  # noqa: B018
    with pytest.raises(TypeError, match=r"first dimension N is symbolic"):
        len(X)
    with pytest.raises(TypeError, match="0-dimensional"):
        len(sg.input("s", shape=()))
    assert np.size(a) == 12 and np.size(a, 1) == 4
    # having a len() does not make a node a sequence NumPy would try to convert
    with pytest.raises(TypeError, match=r"input of shape \(3, 4\)\) has no NumPy value"):
        np.asarray([a, 1.0])


def test_numpy_protocol_builds_the_same_nodes():
    a, b = sg.input("a", shape=(3, 4)), sg.input("b", shape=(4, 5))
    X = sg.input("X", shape=("N", 3))
    assert np.einsum("ij,jk->ik", a, b) is sg.einsum("ij,jk->ik", a, b)
    assert np.einsum("ni,ij->nj", X, a).shape == ("N", 4)
    assert np.stack([X, X], axis=1) is sg.stack([X, X], axis=1)
    assert np.squeeze(X[:, :1]) is sg.squeeze(X[:, :1])
    assert np.expand_dims(X, 0) is sg.expand_dims(X, 0)
    assert np.ravel(a) is a.ravel() is a.flatten()
    assert np.tensordot(a, b, 1) is sg.tensordot(a, b, 1)
    assert np.outer(a, b) is sg.outer(a, b)
    assert [p.shape for p in np.split(a, [1], axis=1)] == [(3, 1), (3, 3)]
    assert np.diagonal(a) is a.diagonal() and np.trace(a) is a.trace()
    assert np.tril(a) is sg.tril(a) and np.triu(a, 1) is sg.triu(a, 1)
    assert np.pad(a, 1, constant_values=2) is sg.pad(a, 1, constant_values=2)
    with pytest.raises(TypeError, match="np.einsum.*out"):
        np.einsum("ij->ji", a, out=np.zeros((4, 3)))
    with pytest.raises(TypeError, match="np.pad.*reflect_type"):
        np.pad(a, 1, mode="constant", reflect_type="odd")


def test_stack_split_pad_keep_dtypes():
    i = sg.input("i", shape=(4,), dtype="int32")
    x = sg.input("x", shape=(4,), dtype="float32")
    assert sg.stack([i, x]).dtype == np.float64  # NumPy's promotion of int32 with float32
    assert all(p.dtype == np.int32 for p in sg.split(i, 2))
    got = sg.evaluate(sg.pad(i, 1, constant_values=7), i=np.arange(4))
    np.testing.assert_array_equal(got, np.pad(np.arange(4, dtype=np.int32), 1,
                                              constant_values=7))
    assert got.dtype == np.int32


# -- errors name what was expected and what was given ---------------------------------------

def test_errors():
    a = sg.input("a", shape=(3, 4))
    X = sg.input("X", shape=("N", 3))
    with pytest.raises(ValueError, match=r"operand 0 has shape \(3, 4\) \(2 dimensions\) but "
                                         r"its subscripts 'ijk' name 3"):
        sg.einsum("ijk->i", a)
    with pytest.raises(ValueError, match=r"name 2 operands, got 1"):
        sg.einsum("ij,jk->ik", a)
    with pytest.raises(ValueError, match=r"output subscript 'z'"):
        sg.einsum("ij->z", a)
    with pytest.raises(ValueError, match=r"letters, got '1'"):
        sg.einsum("i1->i", a)
    with pytest.raises(sg.ShapeError, match=r"subscript 'j' has length 4 .* and 3 in "
                                            r"operand 1"):
        sg.einsum("ij,jk->ik", a, a)
    with pytest.raises(TypeError, match="subscripts string"):
        sg.einsum(a, [0, 1])
    with pytest.raises(ValueError, match="output subscripts 'ii' repeat a letter"):
        sg.einsum("ij->ii", a)
    with pytest.raises(ValueError, match=r"under '\.\.\.' but the output names no"):
        sg.einsum("...j->j", a)
    with pytest.raises(ValueError, match="more than one '->'"):
        sg.einsum("ij->j->i", a)
    with pytest.raises(sg.ShapeError, match=r"axis 1 of a \(shape \(3, 4\)\) has length 4 "
                                            r"but axis 0 of b"):
        sg.tensordot(a, a, ([1], [0]))
    with pytest.raises(sg.ShapeError, match="repeat an axis"):
        sg.tensordot(a, a, ([0, 0], [0, 1]))
    with pytest.raises(sg.ShapeError, match=r"axes=3 needs operands of at least 3"):
        sg.tensordot(a, a, 3)
    with pytest.raises(sg.ShapeError, match=r"same shape, got \(3, 4\), \(N, 3\)"):
        sg.stack([a, X])
    with pytest.raises(sg.ShapeError, match="stack: axis 3 is out of range"):
        sg.stack([a, a], axis=3)
    with pytest.raises(ValueError, match=r"length 4\) does not divide into 3 equal"):
        sg.split(a, 3, axis=1)
    with pytest.raises(sg.ShapeError, match="symbolic length N; give the split indices"):
        sg.split(X, 2)
    with pytest.raises(sg.ShapeError, match=r"axis 1 of shape \(3, 4\) has length 4"):
        sg.squeeze(a, 1)
    with pytest.raises(sg.ShapeError, match="symbolic dimension N cannot be merged"):
        X.ravel()
    with pytest.raises(sg.ShapeError, match="symbolic length N, but needs a known length"):
        sg.diagonal(X)
    with pytest.raises(sg.ShapeError, match="axis1 and axis2 cannot be the same"):
        a.diagonal(0, 1, -1)
    with pytest.raises(sg.ShapeError, match="at least two dimensions"):
        sg.trace(sg.input("v", shape=(3,)))
    with pytest.raises(sg.ShapeError, match="symbolic length N"):
        sg.pad(X, 1)
    with pytest.raises(ValueError, match=r"non-negative ints, got \(-1, 2\) for axis 0"):
        sg.pad(a, (-1, 2))
    with pytest.raises(ValueError, match="only mode='constant'"):
        sg.pad(a, 1, mode="edge")
    with pytest.raises(ValueError, match="one pair per axis .* 2 dimensions"):
        sg.pad(a, ((1, 1), (1, 1), (1, 1)))
