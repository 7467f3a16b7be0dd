"""Intermediates kept in registers (codegen/registers.py): which buffers become ``Let``s, and
an optimizer step that computes the same with the pass on and off."""

from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg
from symgrad.codegen import loopir as L
from symgrad.codegen.registers import keep_in_registers

F32 = np.dtype("float32")
AT = L.Index("i")


def _load(buf: str, offset: L.Expr = AT) -> L.Load:
    return L.Load(buf, offset, F32)


def _kernel(name: str, body: list) -> L.Kernel:
    return L.Kernel(name, [], [], body)


def _buffers(**roles: str) -> dict:
    return {name: L.Buffer(name, F32, role, (8,)) for name, role in roles.items()}


def _loop(*body) -> L.Loop:
    return L.Loop("i", L.Const(0, L.INT), L.Const(8, L.INT), list(body))


def test_a_temp_read_only_at_its_element_in_its_loop_becomes_a_let():
    buffers = _buffers(p="param", t="temp", out="output")
    loop = _loop(L.Store("t", AT, L.Op("exp", (_load("p"),), F32)),
                 L.Store("out", AT, L.Op("add", (_load("t"), _load("t")), F32)))
    assert keep_in_registers([_kernel("k", [loop])], buffers) == ["t"]
    assert isinstance(loop.body[0], L.Let) and loop.body[0].name == "t.reg"
    assert loop.body[1].value.args == (L.Local("t.reg", F32),) * 2
    assert [e.buf for e in L.collect([loop], L.Load)] == ["p"]


@pytest.mark.parametrize("case", ["other element", "another kernel", "an output",
                                  "read before", "in a region", "stored twice"])
def test_a_buffer_anything_else_can_see_stays_a_buffer(case):
    buffers = _buffers(p="param", t="output" if case == "an output" else "temp", out="output")
    store = L.Store("t", AT, _load("p"))
    use = L.Store("out", AT, _load("t", L.iadd(AT, 1) if case == "other element" else AT))
    body = [use, store] if case == "read before" else [store, use]
    if case == "in a region":
        body = [L.Region([store]), use]
    if case == "stored twice":
        body = [store, use, L.Store("t", AT, _load("p"))]
    kernels = [_kernel("k", [_loop(*body)])]
    if case == "another kernel":
        kernels.append(_kernel("k2", [_loop(L.Store("out", AT, _load("t")))]))
    assert keep_in_registers(kernels, buffers) == []
    assert not any(isinstance(s, L.Let) for k in kernels for s in L.statements(k.body))


def _adam_step(registers: bool):
    rng = np.random.default_rng(0)
    X = sg.input("X", ("N", 30))
    labels = sg.input("labels", ("N",), dtype="int32")
    W = sg.param("W", init=(rng.standard_normal((30, 10)) * 0.1).astype(np.float32))
    E = sg.param("E", init=(rng.standard_normal((50, 30)) * 0.1).astype(np.float32))
    ids = sg.input("ids", ("N",), dtype="int32")
    loss = sg.mean(sg.cross_entropy((X + E[ids]) @ W, labels))
    step = sg.compile_step(loss, sg.optim.Adam(lr=0.01, weight_decay=0.01),
                           passes={"registers": registers})
    feeds = {"X": rng.standard_normal((200, 30)).astype(np.float32),
             "labels": rng.integers(0, 10, 200).astype(np.int32),
             "ids": rng.integers(0, 50, 200).astype(np.int32)}
    return step, (W, E), feeds


def test_an_optimizer_step_trains_the_same_with_its_intermediates_in_registers():
    results = []
    for registers in (True, False):
        step, params, feeds = _adam_step(registers)
        losses = [float(step(**feeds)) for _ in range(4)]
        results.append((losses, [p.value.copy() for p in params], step.loop_ir))
    (losses, values, ir), (losses_off, values_off, ir_off) = results
    # the decayed gradient and the combined one: registers, not buffers of W's size
    assert ir.count(".reg = ") >= 2 and ".reg" not in ir_off
    assert ir.count("] = ") < ir_off.count("] = ")
    np.testing.assert_allclose(losses, losses_off, rtol=1e-6)
    for got, want in zip(values, values_off):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("model", ["low rank", "shared clip"])
def test_a_computed_matrix_a_blas_call_reads_stays_a_buffer(model):
    """A weight matrix computed before the pass (``U @ V``, ``clip(W)``) is read by the
    pass's BLAS calls, which name the buffer, not its elements: it keeps its buffer (it
    was made a register once, and the calls read a one-element buffer: NaN)."""
    rng = np.random.default_rng(3)
    X = sg.input("X", ("N", 20), dtype="float64")
    if model == "low rank":
        U = sg.param("U", init=rng.standard_normal((20, 4)))
        V = sg.param("V", init=rng.standard_normal((4, 30)))
        out = sg.sum(sg.tanh(X @ (U @ V)), axis=1)
    else:
        W = sg.param("W", init=rng.standard_normal((20, 30)))
        clipped = sg.clip(W, -1.0, 1.0)
        out = sg.sum(X @ clipped + sg.exp(X) @ clipped, axis=1)
    feeds = {"X": rng.standard_normal((300, 20))}
    want = sg.evaluate(out, **feeds)
    for registers in (True, False):
        f = sg.function(out, passes={"registers": registers})
        assert "BLAS" in f.plan
        np.testing.assert_allclose(f(**feeds), want, rtol=1e-10, atol=1e-10,
                                   err_msg=f"registers={registers}")
