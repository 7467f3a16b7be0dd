"""Data-parallel training on MPI: ``mpiexec -n 2`` and ``-n 3`` (uneven splits, a process
with no sample) run ``mpi_worker.py`` on this machine (``-launcher fork``: no remote
shell, processes talk over shared memory/loopback), which writes what every scenario gave
on each process; the tests compare it with one process on the whole batch and the
processes with each other (parameters bit for bit).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("mpi_worker.py")


def _mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")  # the mpich wheel's, in the venv
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _available() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return _mpiexec() is not None


if not _available():
    if os.environ.get("CI"):  # CI installs the mpi extra: missing there is a failure
        raise RuntimeError("test_mpi: mpi4py or mpiexec missing; pip install -e '.[mpi]'")
    pytest.skip("needs mpi4py and mpiexec: pip install -e '.[mpi]'", allow_module_level=True)


def _run(processes: int, tmp: Path) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    command = [_mpiexec(), "-n", str(processes), "-launcher", "fork", sys.executable,
               str(WORKER), str(tmp)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(processes)]
    for r in results:
        for name, value in r.items():
            assert not (isinstance(value, dict) and "crashed" in value), \
                f"rank {r['rank']}, scenario {name}:\n{value['crashed']}"
    return results


@pytest.fixture(scope="module", params=[2, 3], ids=["n2", "n3"])
def ranks(request, tmp_path_factory) -> list[dict]:
    return _run(request.param, tmp_path_factory.mktemp(f"mpi{request.param}"))


def _close(a: list[float], b: list[float], rtol: float) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rtol * max(1.0, abs(y)) for x, y in zip(a, b))


def test_steps_equal_one_process_on_the_whole_batch(ranks):
    """SGD (momentum) and Adam on linear, softmax regression, an MLP and a loss with a max
    and a min over the batch: the losses and parameters of one process on the
    concatenated batch, to float32 rounding, over uneven splits."""
    steps = ranks[0]["steps"]
    assert len(steps) == 8
    for name, r in steps.items():
        assert r["steps"] == 4, name
        assert _close(r["losses"], r["losses1"], 1e-5), (name, r["losses"], r["losses1"])
        assert r["param_diff"] <= 1e-5 * max(1.0, r["scale"]), (name, r["param_diff"])
    if ranks[0]["size"] == 3:  # 2 samples over 3 processes: rank 0 stepped on none
        assert all(r["empty"] for r in steps.values())


def test_parameters_bit_identical_on_every_process(ranks):
    for scenario in ["threads", "faults", "fit", "minimize"]:
        digests = {r[scenario]["digest"] for r in ranks}
        assert len(digests) == 1, scenario
    for name in ranks[0]["steps"]:
        assert len({r["steps"][name]["digest"] for r in ranks}) == 1, name
    # (and the losses every process saw are the same)
    assert len({json.dumps(r["fit"]["step_loss"]) for r in ranks}) == 1


def test_threads_combined_before_the_reduction(ranks):
    r = ranks[0]["threads"]
    assert len(r["threads"]) == 1 and r["threads"][0] >= 2  # each process split its pass
    assert r["param_diff"] <= 1e-6


def test_a_bad_feed_on_one_process_raises_the_same_error_everywhere(ranks):
    last = ranks[0]["size"] - 1
    for case, expect in [("shape", "expected shape (N, 8)"),
                         ("labels", "labels must lie in [0, 4)")]:
        messages = {r["faults"][case]["message"] for r in ranks}
        assert len(messages) == 1, (case, messages)
        assert {r["faults"][case]["type"] for r in ranks} == {"DistributedError"}
        (message,) = messages
        assert f"rank {last}: ValueError" in message and expect in message, message
        assert "Nothing was written" in message
    nonfinite = {(r["faults"]["nonfinite"]["type"], r["faults"]["nonfinite"]["message"])
                 for r in ranks}
    assert len(nonfinite) == 1 and next(iter(nonfinite))[0] == "NonFiniteError"
    assert {r["faults"]["empty"]["type"] for r in ranks} == {"ValueError"}
    assert ranks[0]["faults"]["hook"] == {"type": "RuntimeError",
                                          "message": "injected into the after-pass hook"}
    assert all(r["faults"]["unchanged"] for r in ranks)  # nothing written by any of it


def test_graphs_wrong_over_shards_are_refused(ranks):
    faults = ranks[0]["faults"]
    assert faults["index"]["type"] == "ValueError"
    assert "indexes the batch axis 'N' at -1" in faults["index"]["message"]
    assert faults["layout"]["type"] == "ValueError"
    assert "as a memory layout" in faults["layout"]["message"]
    assert faults["sliced"]["type"] == "ValueError"
    assert "slices the batch axis 'N' (a value of length 'N-1'" in faults["sliced"]["message"]
    assert faults["not_comm"]["type"] == "TypeError"
    assert "mpi4py communicator" in faults["not_comm"]["message"]


def test_fit_is_one_process_fit_and_checkpoints_load_everywhere(ranks):
    for r in ranks:
        f = r["fit"]
        assert len(f["step_loss"]) == 12  # 2 epochs of ceil(53 / 10) minibatches
        assert _close(f["step_loss"], f["step_loss1"], 1e-5)
        assert _close(f["validation"], f["validation1"], 1e-5)
        assert f["param_diff"] <= 1e-5
        assert f["loaded_equal"]  # rank 0 wrote it, every process loaded it
        assert f["load_missing"]["type"] == "DistributedError"
        assert "rank 1: FileNotFoundError" in f["load_missing"]["message"]
    # seed=None: rank 0's shuffle on every process
    assert len({r["fit"]["digest_none_seed"] for r in ranks}) == 1
    assert len({json.dumps(r["fit"]["losses_none_seed"]) for r in ranks}) == 1


def test_minimize_over_shards(ranks):
    for r in ranks:
        m = r["minimize"]
        assert m["success"]
        assert m["param_diff"] <= 1e-7
        assert abs(m["value"] - m["value1"]) <= 1e-12 * abs(m["value1"])


def test_example_script_under_mpiexec():
    """examples/data_parallel.py as the README runs it: one report (rank 0's)."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([_mpiexec(), "-n", "2", "-launcher", "fork", sys.executable,
                           str(root / "examples" / "data_parallel.py")], cwd=root,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("process(es)") == 1 and "2 process(es)" in done.stdout
    accuracy = float(done.stdout.split("test accuracy:")[1].split()[0])
    assert accuracy > 0.9, done.stdout
