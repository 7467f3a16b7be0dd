"""Run under ``mpiexec -n K python mpi_worker.py OUT_DIR`` by ``test_mpi.py``: every
data-parallel scenario on this process, against one process on the whole batch (each
process computes that reference itself), written as JSON to ``OUT_DIR/rank<r>.json``.

Every number a test compares is computed here; ``test_mpi.py`` asserts on them (and
compares the digests of the parameters between the ranks).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback

import numpy as np
from mpi4py import MPI

import symgrad as sg
from symgrad.runtime import distributed, llvm_function
from symgrad.runtime.distributed import shard_of

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
out: dict = {"size": size, "rank": rank}
sg.set_num_threads(1)  # (the "threads" scenario splits its passes)


# -- models: (loss, params, data(n, rng)) ------------------------------------------------
def linear():
    x1, x2, y = sg.inputs("x1 x2 y")
    w1, w2, b = sg.params("w1 w2 b", init=0.1)
    loss = sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2)

    def data(n, rng):
        a1, a2 = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
        return {"x1": a1, "x2": a2, "y": (2 * a1 - 3 * a2 + 0.5).astype(np.float32)}
    return loss, [w1, w2, b], data


def softmax():
    X = sg.input("X", shape=("N", 8))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W = sg.param("W", shape=(8, 4), init=sg.init.glorot(seed=3))
    c = sg.param("c", shape=(4,))
    loss = sg.mean(sg.cross_entropy(X @ W + c, labels))

    def data(n, rng):
        return {"X": rng.normal(size=(n, 8)).astype(np.float32),
                "labels": rng.integers(0, 4, n).astype(np.int32)}
    return loss, [W, c], data


def mlp():
    X = sg.input("X", shape=("N", 10))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W1 = sg.param("W1", shape=(10, 16), init=sg.init.glorot(seed=0))
    b1 = sg.param("b1", shape=(16,))
    W2 = sg.param("W2", shape=(16, 3), init=sg.init.glorot(seed=1))
    b2 = sg.param("b2", shape=(3,))
    loss = sg.mean(sg.cross_entropy(sg.relu(X @ W1 + b1) @ W2 + b2, labels))

    def data(n, rng):
        return {"X": rng.normal(size=(n, 10)).astype(np.float32),
                "labels": rng.integers(0, 3, n).astype(np.int32)}
    return loss, [W1, b1, W2, b2], data


def extremes():
    """A max and a min over the batch beside a mean (the second, MAX, allreduce)."""
    x, y = sg.inputs("x y")
    w = sg.param("w", init=0.3, dtype="float64")
    e = w * x - y
    loss = sg.mean(e ** 2) + 0.1 * sg.max(e) - 0.05 * sg.min(e)

    def data(n, rng):
        return {"x": rng.normal(size=n), "y": rng.normal(size=n)}
    return loss, [w], data


MODELS = {"linear": linear, "softmax": softmax, "mlp": mlp, "extremes": extremes}
OPTIMIZERS = {"sgd": lambda: sg.optim.SGD(lr=0.05, momentum=0.9),
              "adam": lambda: sg.optim.Adam(lr=0.01)}


def digest(step) -> str:
    """Every parameter, optimizer state array and the step count, bit for bit."""
    h = hashlib.sha256()
    for target in step._targets:
        h.update(np.ascontiguousarray(target.arg.value).tobytes())
    return h.hexdigest()


def shard(batch: dict, n: int) -> dict:
    mine = shard_of(n, rank, size)
    return {k: v[mine] for k, v in batch.items()}


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(p.value, np.float64) -
                                   np.asarray(q.value, np.float64)))) for p, q in zip(a, b))


def scenario(name):
    def wrap(fn):
        try:
            out[name] = fn()
        except Exception:
            out[name] = {"crashed": traceback.format_exc()}
        return fn
    return wrap


# batch sizes: uneven splits; 2 samples over 3 processes leaves rank 0 without any
SIZES = [37, 2, 64, 5]


@scenario("steps")
def _steps():
    results = {}
    for mname, build in MODELS.items():
        for oname, make in OPTIMIZERS.items():
            loss, params, data = build()
            step = sg.compile_step(loss, make(), comm=comm)
            loss1, params1, _ = build()
            step1 = sg.compile_step(loss1, make())
            rng = np.random.default_rng(7)
            losses, losses1, empty = [], [], []
            for n in SIZES:
                batch = data(n, rng)
                part = shard(batch, n)
                empty.append(len(next(iter(part.values()))) == 0)
                losses.append(step(part))
                losses1.append(step1(batch))
            results[f"{mname}/{oname}"] = {
                "losses": losses, "losses1": losses1, "param_diff": max_diff(params, params1),
                "scale": max(float(np.max(np.abs(p.value))) for p in params1),
                "digest": digest(step), "steps": step.step_count, "empty": any(empty)}
    return results


@scenario("threads")
def _threads():
    """Each process splits its pass over 2 threads: their partials are combined before
    the reduction."""
    old = llvm_function.MIN_WORK_PER_THREAD
    llvm_function.MIN_WORK_PER_THREAD = 1
    sg.set_num_threads(2)
    try:
        loss, params, data = mlp()
        step = sg.compile_step(loss, sg.optim.Adam(lr=0.01), comm=comm)
        loss1, params1, _ = mlp()
        step1 = sg.compile_step(loss1, sg.optim.Adam(lr=0.01))
        rng = np.random.default_rng(1)
        for _ in range(2):
            batch = data(600, rng)
            step(shard(batch, 600))
            step1(batch)
        threads = [t for t, _ in step._function._compiled.last_passes]
        return {"param_diff": max_diff(params, params1), "digest": digest(step),
                "threads": threads}
    finally:
        llvm_function.MIN_WORK_PER_THREAD = old
        sg.set_num_threads(1)


def _raises(fn) -> dict:
    try:
        fn()
    except Exception as exc:
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": None, "message": ""}


@scenario("faults")
def _faults():
    results = {}
    loss, params, data = softmax()
    step = sg.compile_step(loss, sg.optim.Adam(lr=0.01), comm=comm)
    rng = np.random.default_rng(2)
    batch = shard(data(30, rng), 30)
    step(batch)
    before = digest(step)
    bad = dict(batch)
    if rank == size - 1:  # one process's feed has the wrong width
        bad["X"] = np.zeros((len(bad["X"]), 7), np.float32)
    results["shape"] = _raises(lambda: step(bad))
    labels = dict(batch)
    if rank == size - 1:  # one process's labels out of range (the reference's check)
        labels["labels"] = np.full_like(labels["labels"], 9)
    results["labels"] = _raises(lambda: step(labels))
    nan = dict(batch)
    if rank == 0:  # a NaN in one process's shard: the global gradient is not finite
        nan["X"] = nan["X"].copy()
        nan["X"][0, 0] = np.nan
    results["nonfinite"] = _raises(lambda: step(nan))
    results["empty"] = _raises(lambda: step({k: v[:0] for k, v in batch.items()}))
    dp = step._function  # an error inside the native entry's callback (injected on
    real = dp._reduce   # every process): kept, no native commit, raised by the step

    def broken(*args):
        raise RuntimeError("injected into the after-pass hook")
    dp._reduce = broken
    results["hook"] = _raises(lambda: step(batch))
    dp._reduce = real
    results["unchanged"] = digest(step) == before
    step(batch)  # the processes are still in step with each other after all of it
    results["digest"] = digest(step)
    # graphs that would be wrong over shards are refused when compiled
    x = sg.input("x", shape=("N",))
    w = sg.param("w", init=1.0)
    results["index"] = _raises(lambda: sg.compile_step(sg.mean((w * x - x[-1]) ** 2),
                                                       sg.optim.SGD(lr=0.1), comm=comm))
    cols = sg.input("cols", shape=(3, "N"))
    results["layout"] = _raises(lambda: sg.compile_step(sg.mean((w * cols) ** 2),
                                                        sg.optim.SGD(lr=0.1), comm=comm))
    results["sliced"] = _raises(lambda: sg.compile_step(
        sg.mean((w * x) ** 2) + sg.mean((w * x[1:] - x[:-1]) ** 2), sg.optim.SGD(lr=0.1),
        comm=comm))
    results["not_comm"] = _raises(lambda: sg.compile_step(loss, sg.optim.SGD(lr=0.1), comm=42))
    return results


@scenario("fit")
def _fit():
    loss, params, data = mlp()
    everything = data(53, np.random.default_rng(4))
    val = data(21, np.random.default_rng(5))
    step = sg.compile_step(loss, sg.optim.Adam(lr=0.01), comm=comm)
    path = os.path.join(sys.argv[1], "fit.safetensors")
    history = sg.fit(step, everything, epochs=2, batch_size=10, seed=11, progress=False,
                     validation=val, checkpoint=path)
    loss1, params1, _ = mlp()
    step1 = sg.compile_step(loss1, sg.optim.Adam(lr=0.01))
    history1 = sg.fit(step1, everything, epochs=2, batch_size=10, seed=11, progress=False,
                      validation=val)
    # seed=None: rank 0's shuffle everywhere
    loss2, _, _ = mlp()
    step2 = sg.compile_step(loss2, sg.optim.SGD(lr=0.1), comm=comm)
    history2 = sg.fit(step2, everything, epochs=1, batch_size=8, progress=False)
    # every process loads the checkpoint rank 0 wrote
    loss3, params3, _ = mlp()
    step3 = sg.compile_step(loss3, sg.optim.Adam(lr=0.01), comm=comm)
    sg.load(path, step3)
    missing = _raises(lambda: sg.load(path if rank == 0 else path + ".absent", step3))
    return {"step_loss": history.step_loss, "step_loss1": history1.step_loss,
            "validation": history.validation_loss, "validation1": history1.validation_loss,
            "param_diff": max_diff(params, params1), "digest": digest(step),
            "digest_none_seed": digest(step2), "losses_none_seed": history2.step_loss,
            "loaded_equal": digest(step3) == digest(step), "load_missing": missing}


@scenario("minimize")
def _minimize():
    rng = np.random.default_rng(6)
    n = 41
    a1, a2 = rng.normal(size=n), rng.normal(size=n)
    t = 1.5 * a1 - 0.5 * a2 + 0.25 + 0.1 * rng.normal(size=n)
    feeds = {"x1": a1, "x2": a2, "y": t}

    def model():
        x1, x2, y = sg.inputs("x1 x2 y", dtype="float64")
        w1, w2, b = sg.params("w1 w2 b", init=0.0, dtype="float64")
        return sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2), [w1, w2, b]
    loss, params = model()
    result = sg.minimize(loss, shard(feeds, n), comm=comm)
    loss1, params1 = model()
    sg.minimize(loss1, feeds)
    h = hashlib.sha256(b"".join(p.value.tobytes() for p in params)).hexdigest()
    fn = distributed.data_parallel(sg.function(loss), comm)
    return {"param_diff": max_diff(params, params1), "success": bool(result.success),
            "digest": h, "value": float(fn(shard(feeds, n))),
            "value1": float(sg.function(loss1)(feeds))}


with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump(out, f)
