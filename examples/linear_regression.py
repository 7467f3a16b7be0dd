"""Linear regression as a formula, trained through compiled steps.

The seed article's five-point worked example: x1 = (2, 1, 3, -1, -3), x2 = (3, 1, -1, 1, -2),
y = (18, 10, 8, 6, -7), from w1 = 5, w2 = 8, b = -2, plain SGD at lr = 0.02 on the mean
squared error; then the same model on 1,000,000 generated points.

Run: python examples/linear_regression.py
"""

import time

import numpy as np

import symgrad as sg

x1, x2, y = sg.inputs("x1 x2 y")
w1, w2, b = sg.params("w1 w2 b")
loss = sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2)

print("loss:      ", loss)
print("LaTeX:     ", sg.latex(loss))
for p in (w1, w2, b):
    print(f"d loss/d {p.name}:", sg.grad(loss, p))

data = {"x1": np.array([2, 1, 3, -1, -3], np.float32),
        "x2": np.array([3, 1, -1, 1, -2], np.float32),
        "y": np.array([18, 10, 8, 6, -7], np.float32)}
w1.value, w2.value, b.value = 5.0, 8.0, -2.0
step = sg.compile_step(loss, sg.optim.SGD(lr=0.02))
print("\nthe compiled step:\n" + step.plan)
print("\nstep  loss        w1       w2       b")
for i in range(1, 501):
    value = step(**data)
    if i <= 3 or i % 100 == 0:
        print(f"{i:4d}  {value:10.5f}  {float(w1.value):7.4f}  {float(w2.value):7.4f}  "
              f"{float(b.value):7.4f}")
print("exact least squares: w1 = 2, w2 = 3, b = 5")

# The same model on a million points: one pass over the data per step.
rng = np.random.default_rng(0)
n = 1_000_000
big = {"x1": rng.normal(size=n).astype(np.float32), "x2": rng.normal(size=n).astype(np.float32)}
big["y"] = (3 * big["x1"] - 2 * big["x2"] + 0.5 + 0.1 * rng.normal(size=n)).astype(np.float32)
w1.value, w2.value, b.value = 0.0, 0.0, 0.0
step = sg.compile_step(loss, sg.optim.SGD(lr=0.1))
start = time.perf_counter()
for _ in range(100):
    value = step(**big)
seconds = time.perf_counter() - start
print(f"\n1,000,000 points, 100 SGD steps in {seconds:.2f} s ({seconds * 10:.2f} ms a step): "
      f"loss {value:.5f}, w1 {float(w1.value):.3f} w2 {float(w2.value):.3f} "
      f"b {float(b.value):.3f} (true 3, -2, 0.5)")
