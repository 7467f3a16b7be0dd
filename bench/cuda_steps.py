"""Training steps on one NVIDIA GPU: symgrad's ``backend="cuda"`` against torch eager,
torch.compile and jax.jit on the same device, the same models, optimizers, data and initial
parameters as ``training_steps.py`` (whose peers this reuses, moved to the GPU).

- symgrad, device batch: the batch uploaded once into device arrays (``__cuda_array_interface__``)
  and read in place each step; parameters and optimizer state stay on the device.
- symgrad, host batch: NumPy arrays fed each step (copied to the device per call).
- torch eager / torch.compile(step) / jax.jit(step): the batch already on the device.

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
    jax_step_fn,
    linear_data,
    optimizer_of,
    repeats,
    symgrad_loss,
    symgrad_optimizer,
    torch_compiled_step,
    torch_loss_fn,
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


def torch_peers(torch, model, init, data):
    dev = torch.device("cuda")
    batch = [torch.from_numpy(a.astype(np.int64) if a.dtype == np.int32 else a).to(dev)
             for a in data.values()]
    loss_fn = torch_loss_fn(model)
    ps = [torch.tensor(p, device=dev, requires_grad=True) for p in init]
    opt = (torch.optim.Adam(ps, lr=1e-3) if optimizer_of(model) == "adam"
           else torch.optim.SGD(ps, lr=0.1))

    def eager():
        loss = loss_fn(*ps, *batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        torch.cuda.synchronize()
        return loss.detach()

    compiled = torch.compile(torch_compiled_step(torch, model), dynamic=False)
    cps = [torch.tensor(p, device=dev) for p in init]
    adam = optimizer_of(model) == "adam"
    state = ([torch.zeros_like(p) for p in cps], [torch.zeros_like(p) for p in cps]) \
        if adam else ()
    step_size = torch.tensor(0.0, device=dev)
    bc2_sqrt = torch.tensor(1.0, device=dev)
    t = 0

    def compiled_step():
        nonlocal cps, state, t
        if adam:
            t += 1
            step_size.fill_(1e-3 / (1 - 0.9 ** t))
            bc2_sqrt.fill_((1 - 0.999 ** t) ** 0.5)
            args = (*state, step_size, bc2_sqrt)
        else:
            args = state
        loss, cps, new_state = compiled(cps, args, *batch)
        if adam:
            state = new_state
        torch.cuda.synchronize()
        return loss

    return {"torch eager": (eager, lambda: [p.detach().cpu().numpy() for p in ps]),
            "torch.compile(step)": (compiled_step, lambda: [p.cpu().numpy() for p in cps])}


def jax_gpu_peer(jax, model, init, data):
    gpu = jax.devices("gpu")[0]
    f, opt_init = jax_step_fn(jax, model)
    batch = [jax.device_put(a, gpu) for a in data.values()]
    params = [jax.device_put(p.copy(), gpu) for p in init]
    opt_state = opt_init(params)

    def step():
        nonlocal params, opt_state
        loss, params, opt_state = jax.block_until_ready(f(params, opt_state, *batch))
        return loss

    return step, (lambda: [np.asarray(p) for p in params])


def bench(model: str, n: int, jax, torch, repeat: int) -> list[list[str]]:
    data = linear_data(n) if model == "linear" else image_data(n)
    init = init_params(model)
    peers = {"symgrad cuda, device batch": symgrad_peer(model, init, data, True),
             "symgrad cuda, host batch": symgrad_peer(model, init, data, False)}
    if torch is not None and torch.cuda.is_available():
        peers.update(torch_peers(torch, model, init, data))
    if jax is not None and any(d.platform == "gpu" for d in jax.devices()):
        peers["jax.jit(step)"] = jax_gpu_peer(jax, model, init, data)
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
