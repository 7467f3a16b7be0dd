"""Linear regression written as a formula: build it, read it, evaluate it.

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

print("model:      ", pred)
print("loss:       ", loss)
print("LaTeX:      ", sg.latex(loss))
print("SymPy:      ", sg.to_sympy(loss))
print("loss at w=0:", float(sg.evaluate(loss, x1=a1, x2=a2, y=t)))

w1.value, w2.value, b.value = 3.0, -2.0, 0.5
print("loss at the true weights:", float(sg.evaluate(loss, x1=a1, x2=a2, y=t)))
