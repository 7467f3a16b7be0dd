"""Compile time, graph to first result: symgrad (uncached, from the disk cache in a fresh
process, from the memory cache) against jax.jit's and torch.compile's first call, for the linear
regression (N = 1e6) and the softmax regression (784 -> 10, batch 256) of the other scripts.

Every measurement runs in a fresh Python process (imports and data are made before the clock
starts) with its own fresh cache directory, so "uncached" means uncached:

- symgrad: ``sg.grad`` + ``sg.function`` (lower, emit LLVM IR, O3, codegen, load) + the first
  call. The disk cache is ``SYMGRAD_CACHE_DIR``; the memory hit is the same graph built again
  in the same process (``sg.grad`` and ``sg.function`` again, then a call).
- jax: ``jax.jit(jax.value_and_grad(f))`` and its first call (trace, lower, XLA compile, run);
  the disk cache is JAX's persistent compilation cache (``jax_compilation_cache_dir``, with the
  minimum compile time and entry size set to 0 so every compile is stored).
- torch: ``torch.compile(torch.func.grad_and_value(f))`` and its first call (dynamo, AOT
  autograd, inductor, C++ compile, run); the disk cache is inductor's
  (``TORCHINDUCTOR_CACHE_DIR``: FX graph and AOT autograd caches, on by default in 2.13).

Each framework's process compiles both models, one after the other. "first in process" is a
model compiled first (it also pays one-time set-up: LLVM target, XLA client, dynamo/inductor);
"second" is the other model compiled after it. Each order is run, so both models get both
numbers (torch: its disk cache is measured for one order only, to keep the run short). A
"new N" row is the first call at a different batch size (jax and torch.compile
specialize on shapes; symgrad passes N at run time).

Run: python bench/compile_time.py [repeats]     (default: 3 symgrad, 2 jax, 1 torch)

A second table, "graph size", times symgrad alone on graphs of about 100, 1,000 and 10,000
nodes (and 10, 100, 1,000 scalar parameters): ``sg.grad`` (differentiation and
simplification) apart from the rest of the compile, each row in a fresh process with no disk
cache and a time limit. Run: python bench/compile_time.py sizes [limit_s]   (default 120 s)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import load_average, machine_line, print_table

MODELS = ("linear", "softmax")
SIZES = {"linear": (1_000_000, 999_983), "softmax": (256, 100)}  # first N, then a new N


def data(model: str, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    if model == "linear":
        x1, x2 = rng.standard_normal((2, n), dtype=np.float32)
        return {"x1": x1, "x2": x2, "y": (2 * x1 - 3 * x2 + 1).astype(np.float32)}
    return {"X": rng.random((n, 784), dtype=np.float32),
            "labels": rng.integers(0, 10, n).astype(np.int32)}


# --- the frameworks: each returns {"first": s, "new_n": s, "again": s or None, ...} ----------

def run_symgrad(order: list[str]) -> dict:
    t = time.perf_counter()
    import symgrad as sg
    from symgrad.runtime import jit

    imported = time.perf_counter() - t

    def graph(model):
        if model == "linear":
            x1, x2, y = sg.inputs("x1 x2 y")
            ps = sg.params("w1 w2 b", init=0.5)
            w1, w2, b = ps
            return sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2), list(ps)
        X = sg.input("X", shape=("N", 784))
        labels = sg.input("labels", shape=("N",), dtype="int32")
        W = sg.param("W", shape=(784, 10), init=sg.init.normal(0.0, 0.01, seed=0))
        c = sg.param("c", shape=(10,), init=0.0)
        return sg.mean(sg.cross_entropy(X @ W + c, labels)), [W, c]

    out = {"import_s": imported}
    for model in order:
        feeds, feeds2 = (data(model, n) for n in SIZES[model])
        loss, ps = graph(model)
        before = (jit.stats.compile_count, jit.stats.disk_hits, jit.stats.memory_hits)
        t0 = time.perf_counter()
        grads = sg.grad(loss, ps)
        t1 = time.perf_counter()
        f = sg.function([loss, *grads])
        t2 = time.perf_counter()
        f(**feeds)
        t3 = time.perf_counter()
        f(**feeds2)
        t4 = time.perf_counter()
        after = (jit.stats.compile_count, jit.stats.disk_hits, jit.stats.memory_hits)
        t5 = time.perf_counter()
        f_again = sg.function([loss, *sg.grad(loss, ps)])
        f_again(**feeds)
        t6 = time.perf_counter()
        out[model] = {"first": t3 - t0, "grad": t1 - t0, "function": t2 - t1, "call": t3 - t2,
                      "new_n": t4 - t3, "again": t6 - t5,
                      "compiles": after[0] - before[0], "disk_hits": after[1] - before[1]}
    return out


def run_jax(order: list[str]) -> dict:
    t = time.perf_counter()
    import jax
    import jax.numpy as jnp

    imported = time.perf_counter() - t
    cache = os.environ.get("BENCH_JAX_CACHE")
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

    def linear(w1, w2, b, x1, x2, y):
        return jnp.mean((w1 * x1 + w2 * x2 + b - y) ** 2)

    def softmax(w, c, x, labels):
        logp = jax.nn.log_softmax(x @ w + c)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    out = {"import_s": imported}
    for model in order:
        feeds, feeds2 = (list(map(jax.device_put, data(model, n).values()))
                         for n in SIZES[model])
        fn, ps = ((linear, [jnp.float32(0.5)] * 3) if model == "linear" else
                  (softmax, [jnp.zeros((784, 10), jnp.float32), jnp.zeros(10, jnp.float32)]))
        argnums = tuple(range(len(ps)))
        jax.block_until_ready(ps)
        t0 = time.perf_counter()
        f = jax.jit(jax.value_and_grad(fn, argnums=argnums))
        jax.block_until_ready(f(*ps, *feeds))
        t1 = time.perf_counter()
        jax.block_until_ready(f(*ps, *feeds2))
        t2 = time.perf_counter()
        f_again = jax.jit(jax.value_and_grad(fn, argnums=argnums))
        jax.block_until_ready(f_again(*ps, *feeds))
        t3 = time.perf_counter()
        out[model] = {"first": t1 - t0, "new_n": t2 - t1, "again": t3 - t2}
    return out


def run_torch(order: list[str]) -> dict:
    t = time.perf_counter()
    import torch
    import torch.nn.functional as F

    imported = time.perf_counter() - t

    def linear(w1, w2, b, x1, x2, y):
        return ((w1 * x1 + w2 * x2 + b - y) ** 2).mean()

    def softmax(w, c, x, labels):
        return F.cross_entropy(x @ w + c, labels)

    out = {"import_s": imported}
    for model in order:
        feeds, feeds2 = ([torch.from_numpy(a if a.dtype != np.int32 else a.astype(np.int64))
                          for a in data(model, n).values()] for n in SIZES[model])
        fn, ps = ((linear, [torch.tensor(0.5) for _ in range(3)]) if model == "linear" else
                  (softmax, [torch.zeros(784, 10), torch.zeros(10)]))
        argnums = tuple(range(len(ps)))
        t0 = time.perf_counter()
        f = torch.compile(torch.func.grad_and_value(fn, argnums=argnums))
        f(*ps, *feeds)
        t1 = time.perf_counter()
        f(*ps, *feeds2)
        t2 = time.perf_counter()
        f_again = torch.compile(torch.func.grad_and_value(fn, argnums=argnums))
        f_again(*ps, *feeds)
        t3 = time.perf_counter()
        out[model] = {"first": t1 - t0, "new_n": t2 - t1, "again": t3 - t2}
    return out


WORKERS = {"symgrad": run_symgrad, "jax": run_jax, "torch": run_torch}


def worker(framework: str, order: list[str]) -> None:
    print("RESULT " + json.dumps(WORKERS[framework](order)))


# --- the driver ---------------------------------------------------------------------------

def available(framework: str) -> bool:
    if framework == "symgrad":
        return True
    try:
        __import__(framework)
    except ImportError:
        pip = "pip install jax" if framework == "jax" else "pip install torch==2.13.0"
        print(f"note: {framework} not installed, skipped ({pip}; benchmark peer only)")
        return False
    return True


def spawn(framework: str, order: list[str], cache: Path) -> dict:
    env = dict(os.environ, SYMGRAD_CACHE_DIR=str(cache / "symgrad"),
               BENCH_JAX_CACHE=str(cache / "jax"), TORCHINDUCTOR_CACHE_DIR=str(cache / "torch"))
    env.pop("SYMGRAD_NO_DISK_CACHE", None)
    proc = subprocess.run([sys.executable, __file__, "--worker", framework, *order], env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{framework} worker failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def measure(framework: str, repeats: int, root: Path) -> dict:
    """{(model, state, position): [seconds, ...]} and the per-model breakdowns."""
    results: dict = {}

    def add(key, value):
        results.setdefault(key, []).append(value)

    for r in range(repeats):
        for order in (list(MODELS), list(reversed(MODELS))):
            cache = Path(tempfile.mkdtemp(prefix=f"cache-{framework}-{r}-", dir=root))
            cold = spawn(framework, order, cache)  # fresh cache directory: uncached
            # same directory, fresh process: disk cache (torch: one order only, for time)
            warm = (spawn(framework, order, cache) if framework != "torch"
                    or order == list(MODELS) else None)
            add(("import",), cold["import_s"])
            for pos, model in enumerate(order):
                where = "first" if pos == 0 else "second"
                add((model, "uncached", where), cold[model]["first"])
                add((model, "again"), cold[model]["again"])
                add((model, "new_n"), cold[model]["new_n"])
                if warm is None:
                    continue
                add((model, "disk", where), warm[model]["first"])
                for part in ("grad", "function", "call"):
                    if part in cold[model]:
                        add((model, "uncached", part), cold[model][part])
                        add((model, "disk", part), warm[model][part])
                if framework == "symgrad":  # check the caches did what they say
                    assert cold[model]["compiles"] >= 1 and cold[model]["disk_hits"] == 0, cold
                    assert warm[model]["compiles"] == 0 and warm[model]["disk_hits"] >= 1, warm
    return results


def ms(values) -> str:
    return "-" if not values else f"{np.median(values) * 1e3:.1f}"


def main(repeats: int | None) -> None:
    print("Compile time, graph to first result (ms; median over fresh processes)")
    print(machine_line())
    print(f"load average at start: {load_average()}")
    frameworks = [f for f in ("symgrad", "jax", "torch") if available(f)]
    all_results = {}
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
        for fw in frameworks:
            n = repeats if repeats is not None else {"symgrad": 3, "jax": 2}.get(fw, 1)
            t = time.perf_counter()
            all_results[fw] = (measure(fw, n, Path(tmp)), n)
            print(f"  {fw}: {(3 if fw == 'torch' else 4) * n} fresh processes in "
                  f"{time.perf_counter() - t:.0f} s")
    labels = {"uncached": "uncached", "disk": "disk cache, fresh process"}
    names = {"symgrad": "symgrad", "jax": "jax.jit", "torch": "torch.compile"}
    rows = []
    for fw, (res, _) in all_results.items():
        for state in ("uncached", "disk"):
            row = [f"{names[fw]}, {labels[state]}"]
            for model in MODELS:
                row += [ms(res.get((model, state, "first"))), ms(res.get((model, state, "second")))]
            rows.append(row)
        rows.append([f"{names[fw]}, same graph again in process"]
                    + sum(([ms(res[(m, "again")]), ""] for m in MODELS), []))
        rows.append([f"{names[fw]}, first call at a new N"]
                    + sum(([ms(res[(m, "new_n")]), ""] for m in MODELS), []))
    print()
    print_table(["", "linear: 1st in process", "2nd", "softmax: 1st in process", "2nd"], rows)
    if "symgrad" in all_results:
        res, _ = all_results["symgrad"]
        print("\nsymgrad, where the time goes (ms, median over both positions):")
        brk = []
        for state in ("uncached", "disk"):
            for model in MODELS:
                brk.append([f"{model}, {labels[state]}"]
                           + [ms(res[(model, state, part)]) for part in ("grad", "function",
                                                                          "call")])
        print_table(["", "sg.grad", "sg.function", "first call"], brk)
    print("\nimport time (ms, median): " + ", ".join(
        f"{names[fw]} {ms(res[('import',)])}" for fw, (res, _) in all_results.items()))
    print("repeats (per order, per cache state): " + ", ".join(
        f"{names[fw]} {n}" for fw, (_, n) in all_results.items()))
    print(f"load average at end: {load_average()}")


# --- graph size: symgrad alone, compile time against the size of the graph -----------------

SIZE_FAMILIES = {  # name -> (what it is, the sizes run: about 100, 1,000, 10,000 nodes)
    "chain": ("x + 0.5, tanh(.)*1.01 in turn, d deep; grad wrt x", (64, 640, 6_400)),
    "sum chain": ("sum of w*x_i over n inputs, added in a chain; grad wrt w",
                  (33, 333, 3_333)),
    "sum tree": ("sum of p_i*x_i over n inputs, added as a balanced tree; grad wrt all p_i",
                 (25, 250, 2_500)),
    "rnn": ("h = tanh(h@W + x_t@U + b), 8 wide, s steps unrolled; grad wrt W, U, b",
            (13, 130, 1_300)),
    "params + Adam": ("mean((sum_i w_i*x_i - y)**2) over p scalar parameters; compile_step "
                      "with Adam", (10, 100, 1_000)),
}


def size_graph(family: str, n: int):
    """(loss, the nodes to differentiate with respect to) of one row."""
    import symgrad as sg

    if family == "chain":
        x = sg.input("x")
        e = x
        for i in range(n):
            e = sg.tanh(e) * 1.01 if i % 2 else e + 0.5
        return sg.sum(e), [x]
    if family == "sum chain":
        w = sg.param("w", init=0.5)
        total = sg.input("x0") * w
        for i in range(1, n):
            total = total + sg.input(f"x{i}") * w
        return sg.mean(total**2), [w]
    if family == "sum tree":
        ps = [sg.param(f"p{i}", init=0.01) for i in range(n)]
        terms = [sg.input(f"x{i}") * p for i, p in enumerate(ps)]
        while len(terms) > 1:
            terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                     for i in range(0, len(terms), 2)]
        return sg.mean(terms[0] ** 2), ps
    if family == "rnn":
        k = 8
        W = sg.param("W", shape=(k, k), init=sg.init.normal(0.0, 0.1, seed=0))
        U = sg.param("U", shape=(k, k), init=sg.init.normal(0.0, 0.1, seed=1))
        b = sg.param("b", shape=(k,), init=0.0)
        h = None
        for t in range(n):
            z = sg.input(f"x{t}", shape=("N", k)) @ U + b
            h = sg.tanh(z if h is None else h @ W + z)
        return sg.mean((h - sg.input("y", shape=("N", k))) ** 2), [W, U, b]
    ws = [sg.param(f"w{i}", init=0.1) for i in range(n)]
    total = ws[0] * sg.input("x0")
    for i in range(1, n):
        total = total + ws[i] * sg.input(f"x{i}")
    return sg.mean((total - sg.input("y")) ** 2), ws


def size_worker(family: str, n: int) -> None:
    """One row, printed as it goes: the diff part first, then the rest of the compile."""
    import symgrad as sg
    from symgrad.expr.node import toposort

    warm = sg.input("warm")  # first-use costs (lazy imports) are not the graph's
    sg.grad(sg.sum(sg.tanh(warm) * 2 + warm), warm)
    loss, wrts = size_graph(family, n)
    row: dict = {"nodes": len(toposort([loss]))}
    if family == "params + Adam":
        step_module = sys.modules["symgrad.runtime.step"]
        spent = {"grad": 0.0, "simplify": 0.0, "Function": 0.0}

        def timed(name):  # the three calls compile_step makes, each timed where it is made
            real = getattr(step_module, name)

            def call(*args, **kwargs):
                if name == "Function":  # the diff part is done: keep it if codegen runs long
                    print("RESULT " + json.dumps(
                        {**row, "diff_s": spent["grad"] + spent["simplify"]}), flush=True)
                t = time.perf_counter()
                try:
                    return real(*args, **kwargs)
                finally:
                    spent[name] += time.perf_counter() - t
            setattr(step_module, name, call)

        for name in spent:
            timed(name)
        t = time.perf_counter()
        try:
            sg.compile_step(loss, sg.optim.Adam())
        except Exception as e:  # noqa: BLE001 - reported in the table
            row["error"] = _where(e)
        row["diff_s"] = spent["grad"] + spent["simplify"]
        row["rest_s"] = time.perf_counter() - t - row["diff_s"]
        print("RESULT " + json.dumps(row), flush=True)
        return
    t = time.perf_counter()
    grads = sg.grad(loss, wrts)
    row["diff_s"] = time.perf_counter() - t
    row["out_nodes"] = len(toposort([loss, *grads]))
    print("RESULT " + json.dumps(row), flush=True)  # kept if the compile runs out of time
    t = time.perf_counter()
    try:
        sg.function([loss, *grads])
        row["rest_s"] = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - reported in the table
        row["error"] = _where(e)
    print("RESULT " + json.dumps(row), flush=True)


def _where(e: BaseException) -> str:
    """``RecursionError in symgrad/codegen/lower.py``: the error and the deepest symgrad file."""
    tb, where = e.__traceback__, ""
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "/symgrad/" in name:
            where = "symgrad/" + name.rsplit("/symgrad/", 1)[1]
        tb = tb.tb_next
    return f"{type(e).__name__} in {where}" if where else type(e).__name__


def run_size(family: str, n: int, limit: float, cache: Path) -> dict:
    env = dict(os.environ, SYMGRAD_CACHE_DIR=str(cache), SYMGRAD_NO_DISK_CACHE="1")
    cmd = [sys.executable, __file__, "--size-worker", family, str(n)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
        out, failed = proc.stdout, proc.returncode != 0
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        failed = None  # ran out of time
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    row = json.loads(lines[-1][len("RESULT "):]) if lines else {}
    if failed is None and "rest_s" not in row:
        row["error"] = row.get("error") or f"over {limit:.0f} s"
    elif failed and "error" not in row:
        row["error"] = "the process failed (out of memory?)"
    return row


def sizes(limit: float) -> None:
    print(f"Compile time against graph size (s; one fresh process per row, limit {limit:.0f} s)")
    print(machine_line())
    print(f"load average at start: {load_average()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sizes-") as tmp:
        for family, (_, ns) in SIZE_FAMILIES.items():
            for n in ns:
                r = run_size(family, n, limit, Path(tmp))
                diff = f"{r['diff_s']:.2f}" if "diff_s" in r else "-"
                rest = f"{r['rest_s']:.2f}" if "rest_s" in r and "error" not in r else (
                    r.get("error", "-"))
                per = (f"{r['diff_s'] / r['nodes'] * 1e6:.0f}" if "diff_s" in r and
                       r.get("nodes") else "-")
                rows.append([family, f"{n:,}", f"{r.get('nodes', 0):,}", diff, per, rest])
                print("  " + " | ".join(rows[-1]), flush=True)
    print()
    print_table(["graph", "size", "nodes", "sg.grad (diff + simplify)", "us per node",
                 "rest of the compile (sg.function / compile_step)"], rows)
    for family, (what, _) in SIZE_FAMILIES.items():
        print(f"  {family}: {what}")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--size-worker":
        size_worker(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "sizes":
        sizes(float(sys.argv[2]) if len(sys.argv) > 2 else 120.0)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
