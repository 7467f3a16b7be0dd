"""Linear regression written as a formula: build it, read it and its derivatives, train it.

Run: python examples/linear_regression.py
"""

import numpy as np

import symgrad as sg

rng = np.random.default_rng(0)
n = 1000
a1 = rng.normal(size=n).astype(np.float32)
a2 = rng.normal(size=n).astype(np.float32)
t = (3.0 * a1 - 2.0 * a2 + 0.5 + 0.1 * rng.normal(size=n)).astype(np.float32)

x1, x2, y = sg.inputs("x1 x2 y")
w1, w2, b = sg.params("w1 w2 b", init=0.0)
pred = w1 * x1 + w2 * x2 + b
loss = sg.mean((pred - y) ** 2)
grads = sg.grad(loss, [w1, w2, b])

print("model:     ", pred)
print("loss:      ", loss)
print("LaTeX:     ", sg.latex(loss))
print("SymPy:     ", sg.to_sympy(loss))
for p, g in zip((w1, w2, b), grads):
    print(f"d loss/d {p.name}:", g)

# Gradient descent through the NumPy reference backend (compiled steps come with the LLVM
# backend); the loss and all three gradients are one function of the data.
step = sg.function([loss, *grads], backend="numpy")
for i in range(200):
    value, *gs = step(x1=a1, x2=a2, y=t)
    for p, g in zip((w1, w2, b), gs):
        p.value = p.value - 0.1 * g
    if i % 50 == 0:
        print(f"step {i:3d}  loss {float(value):.5f}")
print(f"learned w1={float(w1.value):.3f} w2={float(w2.value):.3f} b={float(b.value):.3f}"
      "  (true 3, -2, 0.5)")
