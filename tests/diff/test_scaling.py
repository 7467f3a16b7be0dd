"""Derivatives and simplification of large graphs: linear work, no recursion, same values.

Chains thousands of operators deep, sums of thousands of terms (in a chain or a balanced
tree), many scalar parameters and unrolled recurrences must differentiate and simplify in
time linear in the graph (each node simplified a bounded number of times), without Python's
recursion limit, and to formulas with the values of the unsimplified derivative.
"""

from __future__ import annotations

import ast
import gc
import time
from pathlib import Path

import numpy as np
import pytest
from diffhelp import SETTINGS, expr_trees, run
from hypothesis import given

import symgrad as sg
from symgrad.diff import Simplifier
from symgrad.diff import collect as C
from symgrad.diff.reverse import raw_grad
from symgrad.diff.simplify import collect
from symgrad.expr import node as node_module
from symgrad.expr.node import toposort

F64 = "float64"
DIFF = Path(sg.__file__).parent / "diff"


def _chain(x, depth: int):
    """The issue's chain: ``+ 0.5`` and ``tanh(.) * 1.01`` in turn."""
    e = x
    for i in range(depth):
        e = sg.tanh(e) * 1.01 if i % 2 else e + 0.5
    return e


def _wide(n: int, tree: bool, tag: str):
    """``sum_i v_i * p_i`` over n inputs and n parameters, added in a chain or a tree."""
    terms = [sg.input(f"{tag}v{i}", dtype=F64) * sg.param(f"{tag}p{i}", init=0.01 * (i % 7),
                                                        dtype=F64) for i in range(n)]
    if not tree:
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def _depth(roots) -> int:
    height: dict = {}
    for n in toposort(list(roots)):
        height[n] = 1 + max((height[s] for s in n.srcs), default=0)
    return max(height[r] for r in roots)


def _visits_per_node(outputs) -> float:
    s = Simplifier()
    for o in outputs:
        s(o)
    return s.visited / len(toposort(list(outputs)))


# ---------------------------------------------------------------------------------------
# Linear work.
# ---------------------------------------------------------------------------------------

def test_a_2000_deep_chain_differentiates_in_seconds():
    x = sg.input("x", dtype=F64)
    f = sg.sum(_chain(x, 2000))
    t = time.perf_counter()
    g = sg.grad(f, x)
    took = time.perf_counter() - t
    assert took < 10, f"sg.grad of a 2,000-deep chain took {took:.1f} s"
    feeds = {"x": np.array([-0.3, 0.2, 0.7])}
    np.testing.assert_allclose(run(g, feeds), run(raw_grad(f, x), feeds), rtol=1e-10)


@pytest.mark.parametrize("build", ["chain", "sum_chain", "sum_tree"])
def test_each_node_is_simplified_a_bounded_number_of_times(build):
    ratios = []
    for n in (150, 1200):
        if build == "chain":
            x = sg.input("x", dtype=F64)
            outs = [raw_grad(sg.sum(_chain(x, n)), x)]
        else:
            f = sg.mean(_wide(n, build == "sum_tree", f"b{n}") ** 2)
            outs = raw_grad(f, [p for p in toposort([f]) if p.op.name == "param"])
        ratios.append(_visits_per_node(outs))
    # about 2.5 today; the old simplifier re-flattened every product: O(n) visits per node
    assert max(ratios) < 4, ratios
    assert ratios[1] < 1.2 * ratios[0], ratios


def test_long_sums_and_products_are_rebuilt_in_blocks():
    terms = [sg.input(f"blk{i}", dtype=F64) for i in range(60)]
    total = terms[0]
    for t in terms[1:]:
        total = total + 2 * t
    product = terms[0]
    for t in terms[1:]:
        product = product * (t + 1)
    for e in (total, product, total * product, total - product):
        s = sg.simplify(e)
        assert sg.simplify(s) is s  # a fixed point
        for n in toposort([s]):  # no sum or product reads as more than 2 * MAX_FLAT parts
            if n.op.name in ("add", "subtract"):
                assert len(C.sum_terms(n)[1]) <= 2 * C.MAX_FLAT, n
            if n.op.name in ("multiply", "divide"):
                assert len(C.product_factors(n)[1]) <= 2 * C.MAX_FLAT, n
        feeds = {f"blk{i}": np.random.default_rng(i).uniform(0.5, 1.5, 3) for i in range(60)}
        np.testing.assert_allclose(run(s, feeds), run(e, feeds), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# No recursion limit.
# ---------------------------------------------------------------------------------------

def test_a_10000_deep_chain_simplifies_without_recursion():
    x = sg.input("x", dtype=F64)
    e = _chain(x, 10_000)
    s = sg.simplify(e)
    assert sg.count_ops(s) <= sg.count_ops(e)
    feeds = {"x": np.array([0.1, -2.0])}
    np.testing.assert_allclose(run(s, feeds), run(e, feeds), rtol=1e-12)


def test_a_balanced_sum_of_250_terms_differentiates_and_stays_shallow():
    f = sg.mean(_wide(250, True, "bal") ** 2)
    params = [p for p in toposort([f]) if p.op.name == "param"]
    grads = sg.grad(f, params)
    raw = raw_grad(f, params)
    # the simplifier keeps the tree shallow (blocks of a few terms, not a 250-term chain)
    assert _depth(grads) <= 8 * _depth([f]), (_depth(grads), _depth([f]))
    rng = np.random.default_rng(0)
    feeds = {f"balv{i}": rng.standard_normal(4) for i in range(250)}
    for i in (0, 97, 249):
        np.testing.assert_allclose(run(grads[i], feeds), run(raw[i], feeds), rtol=1e-10)


def _call_graph() -> dict[str, set[str]]:
    """``module.function`` (or ``module.Class.method``) -> what it calls among those: bare
    names of the module's own functions or of functions imported from ``symgrad.diff``, and
    ``self.method`` in a class (calls through parameters or other objects are not edges)."""
    defs: dict[str, dict[str, str]] = {}
    trees = {p.stem: ast.parse(p.read_text()) for p in DIFF.glob("*.py")}
    for mod, tree in trees.items():
        names = defs.setdefault(mod, {})
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                names[node.name] = f"{mod}.{node.name}"
    graph: dict[str, set[str]] = {}
    for mod, tree in trees.items():
        scope = dict(defs[mod])
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "symgrad.diff."):
                other = defs.get(node.module.rsplit(".", 1)[1], {})
                scope.update({a.asname or a.name: other[a.name] for a in node.names
                              if a.name in other})
        units = [(f"{mod}.{n.name}", n, None) for n in tree.body
                 if isinstance(n, ast.FunctionDef)]
        units += [(f"{mod}.{c.name}.{m.name}", m, c.name) for c in tree.body
                  if isinstance(c, ast.ClassDef) for m in c.body
                  if isinstance(m, ast.FunctionDef)]
        for qual, fn, cls in units:
            params = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
            out = graph.setdefault(qual, set())
            for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
                f = call.func
                if isinstance(f, ast.Name) and f.id in scope and f.id not in params:
                    out.add(scope[f.id])
                elif (cls and isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                      and f.value.id == "self"):
                    out.add(f"{mod}.{cls}.{f.attr}")
    return graph


def test_no_function_in_symgrad_diff_recurses():
    graph = _call_graph()
    assert "simplify.Simplifier._run" in graph and "collect.rebuild_product" in graph
    # the matcher recurses over a rule's pattern (a few levels), never over a graph
    allowed = {"patterns.match"}
    cycles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            name, path = stack.pop()
            for callee in graph.get(name, ()):
                if callee == start and start not in allowed:
                    cycles.append(" -> ".join(path + [callee]))
                elif callee not in seen and callee in graph:
                    seen.add(callee)
                    stack.append((callee, path + [callee]))
    assert not cycles, cycles


# ---------------------------------------------------------------------------------------
# What the collector remembers is what it would compute.
# ---------------------------------------------------------------------------------------

def _forget() -> None:
    for memo in (C._collected, C._sums, C._products, C._splits):
        memo.clear()


def _check_records() -> int:
    """Each node marked collected (``None``) collects to ``None`` when computed afresh, and
    each recorded form is the form read afresh; returns the number of records checked."""
    marked = [n for n, v in C._collected.items() if v is None]
    forms = [(n, v, C._sum_form, C._sum_edges, C._sums) for n, v in C._sums.items()]
    forms += [(n, v, C._product_form, C._product_edges, C._products)
              for n, v in C._products.items()]
    for n in marked:
        _forget()
        assert collect(n) is None, f"{n} was marked collected, but collects to {collect(n)}"
    for n, v, form, edges, memo in forms:
        _forget()
        assert C._flat(n, form, edges, memo) == v, f"{n}: recorded {v}"
    _forget()
    return len(marked) + len(forms)


@SETTINGS
@given(expr_trees(max_depth=6))
def test_records_of_rebuilt_nodes_are_what_reading_them_gives(e):
    _forget()
    sg.simplify(e)
    _check_records()


def test_records_hold_for_float32_coefficients_and_long_forms():
    _forget()
    x = sg.input("rx")  # float32: 1.01 is rounded where it meets x
    kept = [sg.grad(sg.sum(_chain(x, 60)), x)]
    terms = [sg.input(f"rt{i}") for i in range(40)]
    total = terms[0] * 0.3
    for i, t in enumerate(terms[1:]):
        total = total + t * (1.0 + 0.1 * (i % 4)) - 0.7
    kept.append(sg.simplify(total * total / 3))
    assert _check_records() > 100


def test_the_caches_keep_no_graph_alive():
    def build():
        x = sg.input("leakcheck_x")
        w = sg.param("leakcheck_w", init=0.3)
        e = _chain(x * w, 40)
        sg.grad(sg.mean(e**2) + sg.sum(_wide(30, True, "leakcheck")), w)

    build()
    gc.collect()
    alive = [n for n in list(node_module._interned.values())
             if any(m.name.startswith("leakcheck") for m in toposort([n]) if m.name)]
    assert not alive, f"{len(alive)} nodes of a dropped graph are still alive"


# ---------------------------------------------------------------------------------------
# Models that are large in other ways.
# ---------------------------------------------------------------------------------------

def test_an_unrolled_64_step_recurrence_differentiates_in_seconds():
    k = 4
    W = sg.param("rnn_W", shape=(k, k), init=sg.init.normal(0, 0.3, seed=0), dtype=F64)
    U = sg.param("rnn_U", shape=(k, k), init=sg.init.normal(0, 0.3, seed=1), dtype=F64)
    h = None
    for t in range(64):
        z = sg.input(f"rnn_x{t}", shape=("N", k), dtype=F64) @ U
        h = sg.tanh(z if h is None else h @ W + z)
    f = sg.mean((h - sg.input("rnn_y", shape=("N", k), dtype=F64)) ** 2)
    t0 = time.perf_counter()
    gW, gU = sg.grad(f, [W, U])
    took = time.perf_counter() - t0
    assert took < 10, f"sg.grad of a 64-step recurrence took {took:.1f} s"
    assert _visits_per_node(raw_grad(f, [W, U])) < 4
    rng = np.random.default_rng(0)
    feeds = {f"rnn_x{t}": rng.standard_normal((3, k)) for t in range(64)}
    feeds["rnn_y"] = rng.standard_normal((3, k))
    rW, rU = raw_grad(f, [W, U])
    np.testing.assert_allclose(run(gW, feeds), run(rW, feeds), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(run(gU, feeds), run(rU, feeds), rtol=1e-9, atol=1e-12)


def test_a_loss_over_1000_scalar_parameters_differentiates_in_seconds():
    f = sg.mean((_wide(1000, False, "many") - sg.input("many_y", dtype=F64)) ** 2)
    params = [p for p in toposort([f]) if p.op.name == "param"]
    t = time.perf_counter()
    grads = sg.grad(f, params)
    took = time.perf_counter() - t
    assert took < 10, f"sg.grad over 1,000 parameters took {took:.1f} s"
    # each gradient is 2*mean(r*v_i), the residual r shared by all of them
    assert len(toposort(grads)) < 20 * len(params)
    rng = np.random.default_rng(1)
    feeds = {f"manyv{i}": rng.standard_normal(3) for i in range(1000)}
    feeds["many_y"] = rng.standard_normal(3)
    raw = raw_grad(f, params)
    for i in (0, 500, 999):
        np.testing.assert_allclose(run(grads[i], feeds), run(raw[i], feeds), rtol=1e-10)


@pytest.mark.slow
def test_a_sum_of_10000_terms_differentiates():
    # a chain of additions, the deep form (a balanced tree of them is at most as deep; the
    # two forms are compared at 150 and 1,200 terms above)
    f = sg.mean(_wide(10_000, False, "big") ** 2)
    params = [p for p in toposort([f]) if p.op.name == "param"]
    grads = sg.grad(f, params)
    assert len(grads) == 10_000
    assert _visits_per_node(grads) < 4


@pytest.mark.slow
def test_a_10000_deep_chain_differentiates():
    x = sg.input("x", dtype=F64)
    f = sg.sum(_chain(x, 10_000))
    g = sg.grad(f, x)
    feeds = {"x": np.array([0.4])}
    np.testing.assert_allclose(run(g, feeds), run(raw_grad(f, x), feeds), rtol=1e-9)
