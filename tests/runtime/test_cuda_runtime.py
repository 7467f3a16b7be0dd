"""The CUDA runtime (``backend="cuda"``) as a user meets it: training steps, parameters resident
on the device, failures that change nothing, feed errors, determinism, running without a
driver, ``sg.fit`` — on the CPU emulator of tests/cuda (g++ compiles the unchanged CUDA C; one
OS thread per CUDA thread, 64-thread blocks, at most 3 blocks), plus a few checks that run only
where a real GPU and driver are present.

- steps on the emulated GPU against ``backend="numpy"`` steps over 20 batches: the losses, the
  final parameters and the optimizer state (the seed linear regression with SGD, softmax
  regression with Adam, a ReLU MLP with every optimizer);
- residency: after a step the device copy is the newer one and the host array is stale until
  ``.value`` is read; assignments, in-place writes, ``optimizer.lr`` and ``reset()`` between
  steps; LLVM functions, ``sg.evaluate`` and an LLVM step sharing the parameters;
- a bad feed or a failing kernel raises and leaves parameters (host and device), optimizer
  state and step count as they were; the next good step works;
- ``sg.function(backend="cuda")`` raises what the reference raises for every bad feed of
  tests/codegen/test_llvm_backend.py, before any kernel is launched;
- the same call twice is bitwise identical; a new batch size does not recompile;
- without a CUDA driver the source is still generated, and a call raises NoCudaDriverError;
- feeds already on the device (``__cuda_array_interface__``) train like host feeds;
- outputs that are parameter (or input) leaves report the value the step read.

The tests that need the emulator skip where g++ lacks C++20; the no-driver tests need none.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _folder in ("codegen", "cuda"):  # backend_cases / test_llvm_backend, the emulator
    if str(_TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(_TESTS / _folder))

import backend_cases as bc  # noqa: E402
from emulated_driver import EmulatedDriver, gxx_available  # noqa: E402
from test_llvm_backend import BAD_FEEDS, _feed_graph, _good_feeds  # noqa: E402

import symgrad as sg  # noqa: E402
from symgrad.runtime import cuda_compile, cuda_driver  # noqa: E402
from symgrad.runtime.cuda_driver import NoCudaDriverError  # noqa: E402

STEPS = 20
RTOL, ATOL = 1e-4, 1e-5  # float32, after 20 steps summed in different orders


@pytest.fixture(scope="module")
def emulator():
    """Every CUDA function of the tests that ask for it runs on the emulator."""
    if not gxx_available():
        pytest.skip("the CUDA emulator (tests/cuda) needs g++ with -std=c++20 (<barrier>, "
                    "std::atomic_ref)")
    driver = EmulatedDriver()
    cuda_driver.set_driver(driver)
    yield driver
    cuda_driver.set_driver(None)


# -- helpers ------------------------------------------------------------------------------

def linreg(dtype="float32"):
    """The seed model: ``mean((w1*x1 + w2*x2 + b - y)**2)`` (fresh parameters)."""
    return bc.linear_regression(dtype)[0]


def linreg_batch(i: int, dtype="float32") -> dict:
    return bc.linear_regression_feeds(150 + 23 * i, seed=i, dtype=dtype)


def softmax(features=16, classes=4):
    return bc.softmax_regression(features, classes)[0]


def softmax_batch(i: int, features=16, classes=4) -> dict:
    return bc.softmax_regression_feeds(100 + 37 * i, i, features, classes)


def mlp():
    """The 5 -> 8 -> 3 ReLU network of backend_cases (seeded: every call the same start)."""
    return bc.relu_mlp()[0]


def mlp_batch(i: int) -> dict:
    return bc.relu_mlp_feeds(60 + 17 * i, seed=i)


def snapshot(step) -> tuple:
    """Parameters, optimizer state (copies) and step count; reading them syncs the host."""
    params = [np.array(p.value, copy=True) for p in step.params]
    state = {name: {k: np.array(v, copy=True) for k, v in s.items()}
             for name, s in step.optimizer_state.items()}
    return params, state, step.step_count


def assert_same_state(got: tuple, want: tuple, rtol=RTOL, atol=ATOL, what="") -> None:
    (gp, gs, gc), (wp, ws, wc) = got, want
    assert gc == wc, f"{what}: step count {gc} != {wc}"
    assert len(gp) == len(wp)
    for i, (g, w) in enumerate(zip(gp, wp)):
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what}: parameter {i}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{what}: parameter {i}")
    assert gs.keys() == ws.keys()
    for name in ws:
        assert gs[name].keys() == ws[name].keys(), f"{what}: state of {name}"
        for k in ws[name]:
            np.testing.assert_allclose(gs[name][k], ws[name][k], rtol=rtol, atol=atol,
                                       err_msg=f"{what}: state {name}.{k}")


def train(make_loss, make_opt, batches, backend) -> tuple:
    """A fresh model trained on ``batches``: (losses, snapshot, step)."""
    step = sg.compile_step(make_loss(), make_opt(), backend=backend)
    losses = [step(**b) for b in batches]
    return losses, snapshot(step), step


def assert_matches_numpy(make_loss, make_opt, batches, rtol=RTOL, atol=ATOL, what=""):
    got_losses, got, step = train(make_loss, make_opt, batches, "cuda")
    want_losses, want, _ = train(make_loss, make_opt, batches, "numpy")
    np.testing.assert_allclose(got_losses, want_losses, rtol=rtol, atol=atol,
                               err_msg=f"{what}: losses")
    assert_same_state(got, want, rtol, atol, what)
    start = snapshot(sg.compile_step(make_loss(), make_opt(), backend="numpy"))[0]
    assert any(not np.allclose(g, s) for g, s in zip(got[0], start)), f"{what}: nothing moved"
    return step


def slots_of(step) -> list:
    """The ParamSlots a step writes: the parameters, their optimizer state and the step
    count (committed with them)."""
    return [t.arg for t in step._targets]


def model_slots(step) -> list:
    """The ParamSlots of the parameters and their optimizer state (not the step count)."""
    return [s for s in slots_of(step) if s is not step._count.arg]


def state_slots(step) -> list:
    """The ParamSlots of the optimizer state alone."""
    return [node.arg for state in step._state.values() for node in state.values()]


# ---------------------------------------------------------------------------------------
# 1. Training steps on the (emulated) GPU agree with the NumPy reference.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linear_regression_sgd_matches_numpy(dtype, emulator):
    batches = [linreg_batch(i, dtype) for i in range(STEPS)]
    tol = {"rtol": RTOL, "atol": ATOL} if dtype == "float32" else {"rtol": 1e-10, "atol": 1e-12}
    step = assert_matches_numpy(lambda: linreg(dtype), lambda: sg.optim.SGD(lr=0.1), batches,
                                what=f"linear regression {dtype}", **tol)
    assert step.backend == "cuda" and step.step_count == STEPS
    assert "__global__" in step.source


def test_softmax_regression_adam_matches_numpy(emulator):
    batches = [softmax_batch(i) for i in range(STEPS)]
    assert_matches_numpy(softmax, lambda: sg.optim.Adam(lr=1e-2), batches,
                         what="softmax regression")


OPTIMIZERS = {
    "SGD-momentum": lambda: sg.optim.SGD(lr=0.05, momentum=0.9, dampening=0.1),
    "SGD-nesterov": lambda: sg.optim.SGD(lr=0.05, momentum=0.9, nesterov=True,
                                         weight_decay=1e-3),
    "Adam-amsgrad": lambda: sg.optim.Adam(lr=0.02, amsgrad=True, weight_decay=1e-2),
    "AdamW": lambda: sg.optim.AdamW(lr=0.02),
    "RMSProp": lambda: sg.optim.RMSProp(lr=0.01, momentum=0.5, centered=True),
    "Adagrad": lambda: sg.optim.Adagrad(lr=0.1, lr_decay=1e-2),
    "Adadelta": lambda: sg.optim.Adadelta(lr=1.0),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_relu_mlp_every_optimizer_matches_numpy(name, emulator):
    batches = [mlp_batch(i) for i in range(STEPS)]
    assert_matches_numpy(mlp, OPTIMIZERS[name], batches, what=f"MLP {name}")


# ---------------------------------------------------------------------------------------
# 2. Parameters live on the device between steps.
# ---------------------------------------------------------------------------------------


def test_device_copy_is_newer_and_host_is_stale_until_read(emulator):
    make_opt = lambda: sg.optim.SGD(lr=0.1, momentum=0.9)
    step = sg.compile_step(linreg(), make_opt(), backend="cuda")
    twin = sg.compile_step(linreg(), make_opt(), backend="numpy")
    before = {s: s._value.copy() for s in slots_of(step)}
    assert len(before) == 7  # w1 w2 b, a momentum buffer each, and the step count
    for i in range(2):
        batch = linreg_batch(i)
        assert step(**batch) == pytest.approx(twin(**batch), rel=RTOL)
        for slot in slots_of(step):
            assert slot.mirror is not None and slot.mirror.driver is emulator
            assert slot.mirror.device_newer and not slot.mirror.host_newer, slot
            # nothing came back over the bus: the host array is the value before step 1
            np.testing.assert_array_equal(slot._value, before[slot], err_msg=str(slot))
    for p, q in zip(step.params, twin.params):
        slot = p.arg
        value = p.value  # fetched from the device: a read-only snapshot
        assert value is not slot._value and not value.flags.writeable
        np.testing.assert_array_equal(value, slot._value)  # the host copy is current too
        assert not slot.mirror.device_newer and not slot.mirror.host_newer
        np.testing.assert_allclose(value, q.value, rtol=RTOL, atol=ATOL)
        assert not np.array_equal(value, before[slot])
    # the momentum buffers are still only on the device, until read through the step
    assert len(state_slots(step)) == 3
    for slot in state_slots(step):
        assert slot.mirror.device_newer
        np.testing.assert_array_equal(slot._value, 0.0)
    assert_same_state(snapshot(step), snapshot(twin))
    assert not any(s.mirror.device_newer or s.mirror.host_newer for s in slots_of(step))
    # a step after the reads (nothing to upload: both copies are current) agrees
    assert step(**linreg_batch(2)) == pytest.approx(twin(**linreg_batch(2)), rel=RTOL)
    assert_same_state(snapshot(step), snapshot(twin))


def test_values_written_between_steps_are_what_the_next_step_uses(emulator):
    make_opt = lambda: sg.optim.Adam(lr=0.05)
    step = sg.compile_step(softmax(), make_opt(), backend="cuda")
    twin = sg.compile_step(softmax(), make_opt(), backend="numpy")
    (W, c), (W_ref, c_ref) = step.params, twin.params
    for i in range(3):
        step(**softmax_batch(i))
        twin(**softmax_batch(i))
    assert W.arg.mirror.device_newer and c.arg.mirror.device_newer
    rng = np.random.default_rng(7)
    new_W = rng.normal(0, 0.1, W.shape).astype(np.float32)
    for p in (W, W_ref):
        p.value = new_W  # assigned without reading: the device copy is now stale
    for p in (c, c_ref):
        changed = p.value.copy()  # a read fetches the device value; the snapshot is a copy
        changed[1:3] = [0.5, -0.5]
        p.value = changed
    assert W.arg.mirror.host_newer and not W.arg.mirror.device_newer
    np.testing.assert_array_equal(W.arg._value, new_W)
    batch = softmax_batch(3)
    # the loss a step returns is the loss before its update: at the written values
    at_written = float(sg.evaluate(step.loss, **batch))
    np.testing.assert_allclose(at_written, float(sg.evaluate(twin.loss, **batch)), rtol=1e-6)
    assert step(**batch) == pytest.approx(at_written, rel=RTOL)
    twin(**batch)
    assert_same_state(snapshot(step), snapshot(twin), what="after writing values")
    # hyperparameters changed between steps, and a reset of the optimizer state
    for s in (step, twin):
        s.optimizer.lr = 0.2
        s(**softmax_batch(4))
    assert_same_state(snapshot(step), snapshot(twin), what="after lr = 0.2")
    for s in (step, twin):
        s.reset()
    assert step.step_count == 0
    for i in (5, 6):
        assert step(**softmax_batch(i)) == pytest.approx(twin(**softmax_batch(i)), rel=RTOL)
    assert_same_state(snapshot(step), snapshot(twin), what="after reset")


def test_llvm_functions_and_evaluate_see_the_trained_values(emulator):
    loss, loss_ref = linreg(), linreg()
    outs = [loss, *sg.grad(loss, [p for p in loss.walk() if p.op.name == "param"])]
    outs_ref = [loss_ref, *sg.grad(loss_ref, [p for p in loss_ref.walk()
                                               if p.op.name == "param"])]
    on_cpu = sg.function(outs, backend="llvm")
    step = sg.compile_step(loss, sg.optim.SGD(lr=0.1), backend="cuda")
    twin = sg.compile_step(loss_ref, sg.optim.SGD(lr=0.1), backend="numpy")
    probe = linreg_batch(99)
    for i in range(5):
        step(**linreg_batch(i))
        twin(**linreg_batch(i))
    assert all(p.arg.mirror.device_newer for p in step.params)
    # the LLVM function is the first to read the parameters after the GPU steps
    got = on_cpu(**probe)
    want = sg.evaluate(outs_ref, **probe)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    step(**linreg_batch(5))
    twin(**linreg_batch(5))
    assert all(p.arg.mirror.device_newer for p in step.params)
    got = sg.evaluate(outs, **probe)  # and the reference interpreter
    want = sg.evaluate(outs_ref, **probe)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)
    # the trained values, not the initial ones
    assert float(step.params[0].value) != pytest.approx(0.5, abs=1e-3)


def test_cuda_and_llvm_steps_sharing_parameters_alternate(emulator):
    """An Adam step on the GPU and an SGD-momentum step on the CPU train the same
    parameters in turn; the same done with two NumPy steps gives the same run."""
    runs = {}
    for backends in (("cuda", "llvm"), ("numpy", "numpy")):
        loss = mlp()
        gpu = sg.compile_step(loss, sg.optim.Adam(lr=0.02), backend=backends[0])
        cpu = sg.compile_step(loss, sg.optim.SGD(lr=0.05, momentum=0.9), backend=backends[1])
        assert [p.arg for p in gpu.params] == [p.arg for p in cpu.params]
        losses = []
        for i in range(6):
            losses.append(gpu(**mlp_batch(2 * i)))
            losses.append(cpu(**mlp_batch(2 * i + 1)))
        runs[backends[0]] = (losses, snapshot(gpu), snapshot(cpu))
    (got_l, got_gpu, got_cpu), (want_l, want_gpu, want_cpu) = runs["cuda"], runs["numpy"]
    np.testing.assert_allclose(got_l, want_l, rtol=RTOL, atol=ATOL)
    assert_same_state(got_gpu, want_gpu, what="the GPU step")
    assert_same_state(got_cpu, want_cpu, what="the CPU step")


# ---------------------------------------------------------------------------------------
# 3. A failed step changes nothing.
# ---------------------------------------------------------------------------------------


def _bad_step_batches(good: dict) -> dict:
    X, labels = good["X"], good["labels"]
    return {
        "missing_input": {"X": X},
        "typo": {"X": X, "label": labels},  # labels missing, label not used
        "wrong_shape": {**good, "X": X[:, :-1]},
        "wrong_rank": {**good, "X": X[0]},
        "n_bound_twice": {**good, "labels": labels[:-1]},
        "int_not_exact_in_float": {**good, "X": np.full(X.shape, 2**24 + 1, np.int32)},
        "float_into_int": {**good, "labels": labels.astype(np.float32)},
        "label_out_of_range": {**good, "labels": np.where(labels == 0, 4, labels)
                               .astype(np.int32)},
        "empty_batch": {"X": X[:0], "labels": labels[:0]},
    }


def test_bad_feeds_to_a_step_raise_as_numpy_and_change_nothing(emulator):
    make_opt = lambda: sg.optim.Adam(lr=0.05)
    step = sg.compile_step(softmax(), make_opt(), backend="cuda")
    twin = sg.compile_step(softmax(), make_opt(), backend="numpy")
    for i in range(2):
        step(**softmax_batch(i))
        twin(**softmax_batch(i))
    cases = _bad_step_batches(softmax_batch(2))
    for n, (case, batch) in enumerate(cases.items()):
        with pytest.raises(Exception) as want:
            twin(**batch)
        with pytest.raises(type(want.value)) as got:
            step(**batch)
        assert str(got.value) == str(want.value), case
        if n == 0:  # the device copies were the newest: they must be untouched
            assert all(s.mirror.device_newer for s in slots_of(step)), case
        assert_same_state(snapshot(step), snapshot(twin), what=case)
        assert step.step_count == 2, case
    for i in (2, 3):
        assert step(**softmax_batch(i)) == pytest.approx(twin(**softmax_batch(i)), rel=RTOL)
    assert_same_state(snapshot(step), snapshot(twin), what="good steps after the bad ones")


@pytest.mark.parametrize("which", ["second", "last"])
def test_a_failing_kernel_changes_nothing(which, emulator, monkeypatch):
    make_opt = lambda: sg.optim.Adam(lr=0.05)
    step = sg.compile_step(mlp(), make_opt(), backend="cuda")
    twin = sg.compile_step(mlp(), make_opt(), backend="numpy")
    for i in range(2):
        step(**mlp_batch(i))
        twin(**mlp_batch(i))
    kernels = step._function._compiled.cuda.kernels
    assert len(kernels) >= 3
    fail_at = 1 if which == "second" else len(kernels) - 1
    host_before = {s: s._value.copy() for s in model_slots(step)}
    launches = []
    real_launch = emulator.launch

    def launch(module, name, grid, block, args):
        launches.append(name)
        if len(launches) == fail_at + 1:
            raise RuntimeError(f"injected failure in kernel {name}")
        real_launch(module, name, grid, block, args)

    monkeypatch.setattr(emulator, "launch", launch)
    with pytest.raises(RuntimeError, match="injected failure"):
        step(**mlp_batch(2))
    assert launches == [k.name for k in kernels[:fail_at + 1]]
    monkeypatch.undo()
    assert step.step_count == 2
    for slot in model_slots(step):  # nothing committed on the device, nothing on the host
        assert slot.mirror.device_newer, slot
        np.testing.assert_array_equal(slot._value, host_before[slot], err_msg=str(slot))
    assert_same_state(snapshot(step), snapshot(twin), what="after the failure")  # device copy
    assert step(**mlp_batch(2)) == pytest.approx(twin(**mlp_batch(2)), rel=RTOL)
    assert_same_state(snapshot(step), snapshot(twin), what="the next good step")


# ---------------------------------------------------------------------------------------
# 4. sg.function(backend="cuda") checks feeds exactly as the reference does.
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def feed_functions(emulator):
    outs = _feed_graph()
    return outs, sg.function(outs, backend="cuda"), sg.function(outs, backend="numpy")


def test_good_feeds_agree_with_the_reference(feed_functions):
    outs, fn, _ = feed_functions
    feeds = _good_feeds(300)  # more samples than the 192 threads of a grid
    for got, want in zip(fn(**feeds), sg.evaluate(outs, **feeds)):
        bc.assert_agree(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", sorted(BAD_FEEDS))
def test_bad_feed_raises_what_the_reference_raises(case, feed_functions, emulator,
                                                   monkeypatch):
    outs, fn, reference = feed_functions
    feeds = BAD_FEEDS[case](_good_feeds())
    with pytest.raises(Exception) as want:
        reference(**feeds)
    launched = []
    monkeypatch.setattr(emulator, "launch", lambda *args: launched.append(args))
    for call in (fn, fn._compiled):  # sg.function, and the runtime object alone
        with pytest.raises(type(want.value)) as got:
            call(**feeds)
        assert str(got.value) == str(want.value)
    assert launched == []  # every check comes before any kernel


# ---------------------------------------------------------------------------------------
# 5. Determinism and batch sizes.
# ---------------------------------------------------------------------------------------


def test_same_call_twice_is_bitwise_identical(emulator):
    outs = bc.softmax_regression(16, 4)
    fn = sg.function(outs, backend="cuda")
    feeds = softmax_batch(11)  # 507 samples: 3 blocks, each thread several samples
    first, second = fn(**feeds), fn(**feeds)
    for a, b in zip(first, second):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    for got, want in zip(first, sg.evaluate(outs, **feeds)):
        bc.assert_agree(got, want, rtol=1e-5, atol=1e-6)
    # two identical trainings, too
    runs = [train(mlp, lambda: sg.optim.Adam(lr=0.02), [mlp_batch(i) for i in range(4)],
                  "cuda") for _ in range(2)]
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1][0], runs[1][1][0]):
        assert a.tobytes() == b.tobytes()


def test_a_new_batch_size_neither_recompiles_nor_reloads(emulator):
    outs = bc.softmax_regression(16, 4)
    fn = sg.function(outs, backend="cuda")
    module, compiled = fn._compiled._module, emulator.compile_count
    assert module is not None
    for n in (5, 1, 300, 64, 2):  # grows the device buffers, then reuses them
        feeds = bc.softmax_regression_feeds(n, n, 16, 4)
        for got, want in zip(fn(**feeds), sg.evaluate(outs, **feeds)):
            bc.assert_agree(got, want, rtol=1e-5, atol=1e-6, what=f"N={n}")
    assert fn._compiled._module is module
    assert emulator.compile_count == compiled


# ---------------------------------------------------------------------------------------
# 6. Without a CUDA driver.
# ---------------------------------------------------------------------------------------


class _NoGPU:
    """A driver class that fails as pycuda and cuda-python do on a machine without libcuda."""
    name = "fake"

    def __init__(self):
        raise OSError("libcuda.so.1: cannot open shared object file")


def _no_gpu(name: str) -> type:
    return type(name, (_NoGPU,), {"name": name})


@pytest.fixture
def no_driver(monkeypatch):
    """No driver installed, and neither pycuda nor cuda-python reaches a GPU."""
    monkeypatch.setattr(cuda_driver, "_driver", cuda_driver._driver)  # restored afterwards
    cuda_driver.set_driver(None)
    monkeypatch.setattr(cuda_driver, "PyCudaDriver", _no_gpu("pycuda"))
    monkeypatch.setattr(cuda_driver, "CudaPythonDriver", _no_gpu("cuda-python"))
    assert not cuda_driver.driver_available()
    with pytest.raises(NoCudaDriverError) as error:
        cuda_driver.get_driver()
    assert "libcuda.so.1" in str(error.value)  # it says what was tried


def _assert_no_driver_message(error: NoCudaDriverError) -> None:
    msg = str(error)
    assert "no CUDA driver" in msg and "found" in msg, msg
    assert "backend='llvm'" in msg, msg


def _check_without_a_driver():
    loss = linreg()
    fn = sg.function(loss, backend="cuda")  # builds: the source is generated (and compiled)
    assert "__global__" in fn.source
    for name in ("x1", "x2", "y", "w1", "w2", "b"):
        assert name in fn.source
    with pytest.raises(NoCudaDriverError) as error:
        fn(**linreg_batch(0))
    _assert_no_driver_message(error.value)
    step = sg.compile_step(loss, sg.optim.Adam(lr=0.1), backend="cuda")
    assert "__global__" in step.source
    before = snapshot(step)
    with pytest.raises(NoCudaDriverError) as error:
        step(**linreg_batch(0))
    _assert_no_driver_message(error.value)
    assert_same_state(snapshot(step), before, rtol=0, atol=0)
    assert step.step_count == 0
    assert all(p.arg.mirror is None for p in step.params)


def test_without_a_driver_the_source_builds_and_calls_raise(no_driver):
    _check_without_a_driver()


def test_without_a_driver_here(monkeypatch):
    """The same with the real driver lookup (no libcuda on this machine)."""
    monkeypatch.setattr(cuda_driver, "_driver", cuda_driver._driver)
    cuda_driver.set_driver(None)
    if cuda_driver.driver_available():
        pytest.skip("a CUDA driver and GPU are present: the no-driver path cannot be seen")
    _check_without_a_driver()


def test_a_function_built_without_a_driver_runs_once_one_is_installed(emulator, monkeypatch):
    outs = bc.softmax_regression(16, 4)
    with monkeypatch.context() as m:
        m.setattr(cuda_driver, "_driver", None)
        m.setattr(cuda_driver, "PyCudaDriver", _no_gpu("pycuda"))
        m.setattr(cuda_driver, "CudaPythonDriver", _no_gpu("cuda-python"))
        fn = sg.function(outs, backend="cuda")
        with pytest.raises(NoCudaDriverError):
            fn(**softmax_batch(0))
    assert cuda_driver.get_driver() is emulator
    feeds = softmax_batch(1)
    for got, want in zip(fn(**feeds), sg.evaluate(outs, **feeds)):
        bc.assert_agree(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# 7. sg.fit with a step on the GPU.
# ---------------------------------------------------------------------------------------


def test_fit_matches_the_numpy_backend(emulator):
    data = bc.softmax_regression_feeds(103, 21, 16, 4)  # batches of 16: the last one of 7
    validation = bc.softmax_regression_feeds(40, 22, 16, 4)
    runs = {}
    for backend in ("cuda", "numpy"):
        step = sg.compile_step(softmax(), sg.optim.SGD(lr=0.2, momentum=0.9), backend=backend)
        history = sg.fit(step, data, epochs=2, batch_size=16, seed=3, progress=False,
                         validation=validation)
        runs[backend] = history, snapshot(step)
    (got, got_state), (want, want_state) = runs["cuda"], runs["numpy"]
    assert len(got.step_loss) == len(want.step_loss) == 14
    np.testing.assert_allclose(got.step_loss, want.step_loss, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got.epoch_loss, want.epoch_loss, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got.validation_loss, want.validation_loss, rtol=RTOL, atol=ATOL)
    assert len(got.validation_loss) == 2 and not got.interrupted
    start = snapshot(sg.compile_step(softmax(), sg.optim.SGD(lr=0.2), backend="numpy"))[0]
    assert not np.allclose(got_state[0][0], start[0])  # trained
    assert_same_state(got_state, want_state, what="after fit")


# ---------------------------------------------------------------------------------------
# 8. Feeds already on the device (``__cuda_array_interface__``).
# ---------------------------------------------------------------------------------------


class DeviceArray:
    """What CuPy or a PyTorch CUDA tensor offers: data in (emulated) device memory, described
    by ``__cuda_array_interface__``."""

    def __init__(self, driver, array: np.ndarray):
        array = np.ascontiguousarray(array)
        self.address = driver.alloc(array.nbytes)
        driver.upload(self.address, array)
        self.__cuda_array_interface__ = {"shape": array.shape, "typestr": array.dtype.str,
                                         "data": (self.address, False), "strides": None,
                                         "version": 3}


def test_device_feeds_train_like_host_feeds(emulator, monkeypatch):
    make_opt = lambda: sg.optim.Adam(lr=0.05)
    step = sg.compile_step(softmax(), make_opt(), backend="cuda")
    twin = sg.compile_step(softmax(), make_opt(), backend="numpy")
    uploads = []
    real_upload = emulator.upload
    monkeypatch.setattr(emulator, "upload",
                        lambda address, array: (uploads.append(np.asarray(array).nbytes),
                                                real_upload(address, array)))
    for i in range(4):
        batch = softmax_batch(i)
        on_device = {"X": DeviceArray(emulator, batch["X"]), "labels": batch["labels"]}
        uploads.clear()
        assert step(**on_device) == pytest.approx(twin(**batch), rel=RTOL)
        assert batch["X"].nbytes not in uploads  # read in place, not copied again
    assert_same_state(snapshot(step), snapshot(twin), what="device feeds")
    wrong = DeviceArray(emulator, softmax_batch(0)["X"].astype(np.float64))
    with pytest.raises(TypeError, match="float32"):
        step(X=wrong, labels=softmax_batch(0)["labels"])
    assert step.step_count == 4


def test_an_input_fed_on_the_device_is_returned_as_fed(emulator):
    x = sg.input("x", shape=("N",))
    fn = sg.function([sg.sum(x * 2), x], backend="cuda")
    data = np.arange(1, 6, dtype=np.float32)
    total, same = fn(x=DeviceArray(emulator, data))
    assert float(total) == 30.0
    np.testing.assert_array_equal(same, data)


# ---------------------------------------------------------------------------------------
# 9. Outputs that are parameter leaves: their value before the step, as in the reference.
# ---------------------------------------------------------------------------------------


class KeepPrevious(sg.optim.Optimizer):
    """SGD that also keeps each parameter's value before the update (state ``previous``,
    whose new value is the parameter itself: an output that is a parameter leaf)."""

    def __init__(self, lr: float):
        super().__init__({"lr": lr})

    def state_spec(self, param):
        return {"previous": 0.0}

    def update(self, param, grad, state, hyper, step):
        g, _ = self._begin(param, grad, state, hyper)
        return param - self._c(hyper["lr"], param) * g, {"previous": param}


def test_state_that_keeps_the_previous_parameter(emulator):
    batches = [linreg_batch(i) for i in range(3)]
    assert_matches_numpy(linreg, lambda: KeepPrevious(0.1), batches, what="KeepPrevious")


def test_watching_a_scalar_parameter(emulator):
    """The watch of a scalar parameter is the parameter leaf itself: its ``first`` must be
    the value the loss saw, not the one the step committed."""
    watched = {}
    for backend in ("cuda", "numpy"):
        x1, x2, y = sg.input("x1"), sg.input("x2"), sg.input("y")
        w1, w2, b = (sg.param(n, init=v) for n, v in (("w1", 0.5), ("w2", -0.25), ("b", 0.1)))
        loss = sg.mean((w1 * x1 + w2 * x2 + sg.watch(b, "bias") - y) ** 2)
        step = sg.compile_step(loss, sg.optim.SGD(lr=0.1), backend=backend)
        step(**linreg_batch(0))
        watched[backend] = step.watched["bias"]
    assert watched["numpy"]["first"] == pytest.approx(0.1)
    for k in ("mean", "min", "max", "first"):
        np.testing.assert_allclose(watched["cuda"][k], watched["numpy"][k], rtol=RTOL,
                                   err_msg=k)


# ---------------------------------------------------------------------------------------
# 10. On a real GPU (skipped without one).
# ---------------------------------------------------------------------------------------

_REAL: dict = {}


def _real_driver():
    """The driver get_driver finds with no emulator installed (cached), or None and why."""
    if "driver" not in _REAL:
        saved = cuda_driver._driver
        cuda_driver.set_driver(None)
        try:
            _REAL["driver"], _REAL["why"] = cuda_driver.get_driver(), ""
        except NoCudaDriverError as e:
            _REAL["driver"], _REAL["why"] = None, str(e)
        finally:
            cuda_driver.set_driver(saved)
    return _REAL["driver"], _REAL["why"]


@pytest.fixture
def real_gpu(monkeypatch):
    driver, why = _real_driver()
    if driver is None:
        pytest.skip("needs a real NVIDIA GPU and CUDA driver (pycuda or cuda-python); "
                    f"here: {why.split('. The CUDA source')[0]}")
    monkeypatch.setattr(cuda_driver, "_driver", driver)
    assert cuda_compile.compiler() is not None
    return driver


class TestRealGPU:
    def test_linear_regression_step(self, real_gpu):
        batches = [linreg_batch(i) for i in range(STEPS)]
        step = assert_matches_numpy(linreg, lambda: sg.optim.SGD(lr=0.1), batches,
                                    what="linear regression on the GPU")
        assert all(p.arg.mirror.driver is real_gpu for p in step.params)

    def test_softmax_forward(self, real_gpu):
        X = sg.input("X", shape=("N", 64))
        W = sg.param("W", shape=(64, 10), init=sg.init.normal(0.0, 0.1, seed=0))
        c = sg.param("c", shape=(10,), init=sg.init.normal(0.0, 0.1, seed=1))
        outs = [sg.softmax(X @ W + c, axis=-1), sg.mean(sg.logsumexp(X @ W + c, axis=-1))]
        fn = sg.function(outs, backend="cuda")
        for n in (1, 1000, 70001):
            feeds = {"X": np.random.default_rng(n).uniform(0, 1, (n, 64)).astype(np.float32)}
            for got, want in zip(fn(**feeds), sg.evaluate(outs, **feeds)):
                bc.assert_agree(got, want, rtol=1e-5, atol=1e-6, what=f"N={n}")
