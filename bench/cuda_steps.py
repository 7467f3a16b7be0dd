"""Training steps on one NVIDIA GPU: symgrad's ``backend="cuda"`` against torch eager,
torch.compile and jax.jit on the same device, the same models, optimizers, data and initial
parameters as ``training_steps.py`` (whose peers this reuses, moved to the GPU).

- symgrad, device batch: the batch uploaded once into device arrays (``__cuda_array_interface__``)
  and read in place each step; parameters and optimizer state stay on the device.
- symgrad, host batch: NumPy arrays fed each step (copied to the device per call).
- torch eager / torch.compile(step) / jax.jit(step): ``training_steps.py``'s peers with the
  batch, parameters and state on the GPU (torch peers synchronize after each step).

Every peer's parameters after 3 steps are checked against symgrad's first; steps are then
timed in interleaved rounds (medians; each step waits for its result: symgrad returns the
loss as a float, torch peers synchronize, jax blocks).

Run on a machine with a GPU: python bench/cuda_steps.py [--quick]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _common import import_jax, import_torch, print_table, time_interleaved
from training_steps import (
    CHECK_STEPS,
    CONFIGS,
    TITLES,
    image_data,
    init_params,
    jax_peer,
    linear_data,
    repeats,
    symgrad_loss,
    symgrad_optimizer,
    torch_compile_peer,
    torch_eager_peer,
)

import symgrad as sg
from symgrad.runtime.cuda_driver import NoCudaDriverError, get_driver


class DeviceArray:
    """A NumPy array copied to the GPU through symgrad's driver, seen by symgrad as a device
    array (``__cuda_array_interface__``)."""

    def __init__(self, driver, a: np.ndarray):
        a = np.ascontiguousarray(a)
        self.driver, self.address = driver, driver.alloc(a.nbytes)
        driver.upload(self.address, a)
        self.__cuda_array_interface__ = {"shape": a.shape, "typestr": a.dtype.str,
                                         "data": (self.address, False), "strides": None,
                                         "version": 3}

    def __del__(self):
        self.driver.free(self.address)


def symgrad_peer(model, init, data, on_device: bool):
    loss, ps = symgrad_loss(model, init)
    step = sg.compile_step(loss, symgrad_optimizer(model), backend="cuda")
    if on_device:
        driver = get_driver()
        data = {k: DeviceArray(driver, v) for k, v in data.items()}
    return (lambda: step(**data)), (lambda: [p.value for p in ps])


def bench(model: str, n: int, jax, torch, repeat: int) -> list[list[str]]:
    data = linear_data(n) if model == "linear" else image_data(n)
    init = init_params(model)
    peers = {"symgrad cuda, device batch": symgrad_peer(model, init, data, True),
             "symgrad cuda, host batch": symgrad_peer(model, init, data, False)}
    if torch is not None and torch.cuda.is_available():
        peers["torch eager"] = torch_eager_peer(torch, model, init, data, "cuda")
        peers["torch.compile(step)"] = torch_compile_peer(torch, model, init, data, "cuda")
    gpus = [d for d in jax.devices() if d.platform == "gpu"] if jax is not None else []
    if gpus:
        peers["jax.jit(step)"] = jax_peer(jax, model, init, data, gpus[0])
    params, diffs = {}, {}
    for name, (step, get_params) in peers.items():
        for _ in range(CHECK_STEPS):
            step()
        params[name] = [np.array(p, np.float64) for p in get_params()]
    base = params["symgrad cuda, device batch"]
    for name in peers:
        diffs[name] = max(float(np.max(np.abs(a - b))) for a, b in zip(params[name], base))
        if not all(np.allclose(a, b, rtol=1e-3, atol=2e-4) for a, b in zip(params[name], base)):
            raise AssertionError(f"{model}, N = {n}: {name} differs from symgrad by "
                                 f"{diffs[name]:.1e} after {CHECK_STEPS} steps")
    times = time_interleaved({k: v[0] for k, v in peers.items()}, repeat, warmup=3)
    ref = float(np.median(times["symgrad cuda, device batch"]))
    return [[name, f"{n:,}", f"{np.median(ts) * 1e3:.3f}", f"{ts.min() * 1e3:.3f}",
             f"{np.median(ts) / ref:.2f}x", f"{diffs[name]:.0e}"] for name, ts in times.items()]


def main(argv: list[str]) -> None:
    try:
        driver = get_driver()
    except NoCudaDriverError as error:
        sys.exit(f"bench/cuda_steps.py needs a GPU: {error}")
    quick = "--quick" in argv
    print(f"Training steps on the GPU ({driver.name}, {driver.arch}, "
          f"{driver.multiprocessors} SMs)")
    jax, torch = import_jax(), import_torch()
    if torch is not None and torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    start = time.perf_counter()
    header = ["", "batch", "median ms", "min ms", "vs symgrad", f"max |dp| after {CHECK_STEPS}"]
    for model, sizes in CONFIGS.items():
        rows = []
        for n in sizes:
            rows += bench(model, n, jax, torch, repeats(model, n, quick))
        print(f"\n{TITLES[model]}")
        print_table(header, rows)
    print(f"\nwhole run {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
