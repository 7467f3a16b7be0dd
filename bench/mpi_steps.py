"""Data-parallel steps on MPI (issue 15): 1 against 2 processes on this machine.

- a large-batch, memory-bound model: logistic regression with 16 features, a global batch
  of 2e6 float32 rows (128 MB of X per step), Adam
- an MLP: 784-256-10 ReLU, global batch 4096, Adam (~203k parameters: its gradient is
  the bulk of what is reduced)

For each: samples per second (global batch / median step time), the time per step spent
in the pass reductions (the after-pass hook: thread combine, pack, ``MPI_Allreduce``,
unpack) and in the feed agreement before the pass (one small ``Allgather``), and the
bytes reduced per step. Then an ``MPI_Allreduce`` sweep (8 B to 16 MB, float64) gives
this machine's latency and bandwidth for ``bench/README.md``'s model of the multi-node
case.

Run: python bench/mpi_steps.py [--quick]     (launches itself under mpiexec -n 1 and -n 2)
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

QUICK = "--quick" in sys.argv


def models():
    import symgrad as sg

    X = sg.input("X", shape=("N", 16))
    y = sg.input("y", shape=("N",))
    w = sg.param("w", shape=(16,))
    b = sg.param("b")
    z = X @ w + b
    logistic = sg.mean(sg.log1p(sg.exp(-z)) + (1 - y) * z)

    def logistic_data(n, rng):
        return {"X": rng.normal(size=(n, 16)).astype(np.float32),
                "y": (rng.random(n) < 0.5).astype(np.float32)}

    images = sg.input("images", shape=("N", 784))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W1 = sg.param("W1", shape=(784, 256), init=sg.init.glorot(seed=0))
    b1 = sg.param("b1", shape=(256,))
    W2 = sg.param("W2", shape=(256, 10), init=sg.init.glorot(seed=1))
    b2 = sg.param("b2", shape=(10,))
    mlp = sg.mean(sg.cross_entropy(sg.relu(images @ W1 + b1) @ W2 + b2, labels))

    def mlp_data(n, rng):
        return {"images": rng.random((n, 784), np.float32),
                "labels": rng.integers(0, 10, n).astype(np.int32)}

    return {"logistic 16, N = 2e6": (logistic, logistic_data, 500_000 if QUICK else 2_000_000),
            "MLP 784-256-10, batch 4096": (mlp, mlp_data, 4096)}


def worker(out: str) -> None:
    """One process of a run: time each model's step on this process's shard."""
    from mpi4py import MPI

    import symgrad as sg
    from symgrad.runtime.distributed import shard_of

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    sg.set_num_threads(max(1, (os.cpu_count() or 1) // size))
    steps = 5 if QUICK else 15
    result: dict = {"size": size, "threads": sg.get_num_threads(), "models": {}}
    for name, (loss, data, n) in models().items():
        step = sg.compile_step(loss, sg.optim.Adam(lr=1e-3), comm=comm)
        batch = {k: np.ascontiguousarray(v[shard_of(n, rank, size)])
                 for k, v in data(n, np.random.default_rng(0)).items()}
        dp = step._function
        step(batch)  # (compile, first-touch)
        times = []
        dp.reduce_seconds = dp.agree_seconds = 0.0
        dp.reduced_bytes = 0
        for _ in range(steps):
            comm.Barrier()
            t = time.perf_counter()
            step(batch)
            times.append(time.perf_counter() - t)
        worst = comm.allreduce(float(np.median(times)), op=MPI.MAX)  # the slowest process
        result["models"][name] = {
            "step_s": worst, "samples_per_s": n / worst,
            "reduce_s": dp.reduce_seconds / steps, "agree_s": dp.agree_seconds / steps,
            "bytes": dp.reduced_bytes // steps,
            "params": sum(int(np.prod(p.shape)) for p in step.params)}
    sweep = {}
    for nbytes in [8, 64, 512, 4096, 32768, 262144, 2097152, 16777216]:
        buf = np.ones(nbytes // 8)
        repeat = max(5, min(1000, 2_000_000 // max(nbytes, 1)))
        comm.Barrier()
        t = time.perf_counter()
        for _ in range(repeat):
            comm.Allreduce(MPI.IN_PLACE, buf, MPI.SUM)
        sweep[nbytes] = (time.perf_counter() - t) / repeat
    result["allreduce_s"] = sweep
    if rank == 0:
        Path(out).write_text(json.dumps(result))


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import load_average, machine_line, print_table

    print(machine_line())
    print(f"load average at start: {load_average()}")
    mpiexec = Path(sys.executable).with_name("mpiexec")
    runs = []
    for processes in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.json")
            command = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(processes),
                       "-launcher", "fork", sys.executable, __file__, "--worker", out]
            command += ["--quick"] if QUICK else []
            subprocess.run(command, check=True, timeout=1200)
            runs.append(json.loads(Path(out).read_text()))
    rows = []
    for name in runs[0]["models"]:
        one = runs[0]["models"][name]["samples_per_s"]
        for run in runs:
            m = run["models"][name]
            rows.append([name, f"{run['size']} x {run['threads']} threads",
                         f"{m['step_s'] * 1e3:.2f}", f"{m['samples_per_s']:.3g}",
                         f"{m['samples_per_s'] / one:.2f}", f"{m['reduce_s'] * 1e6:.0f}",
                         f"{m['agree_s'] * 1e6:.0f}", f"{m['bytes']:,}", f"{m['params']:,}"])
    print_table(["model", "processes", "step ms", "samples/s", "vs 1", "reduce us/step",
                 "agree us/step", "bytes reduced/step", "params"], rows)
    sweep = runs[1]["allreduce_s"]
    print("\nMPI_Allreduce (SUM, float64, in place) on 2 processes:")
    print_table(["bytes", "us", "GB/s"], [[f"{int(b):,}", f"{s * 1e6:.1f}",
                                           f"{int(b) / s / 1e9:.2f}"] for b, s in sweep.items()])
    sizes = np.array([int(b) for b in sweep], float)
    seconds = np.array(list(sweep.values()))
    slope, intercept = np.polyfit(sizes, seconds, 1)
    print(f"fit: allreduce ~ {intercept * 1e6:.1f} us + bytes / {1 / slope / 1e9:.2f} GB/s")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker(sys.argv[sys.argv.index("--worker") + 1])
    else:
        main()
