"""Print the derivative formulas of the seed models and their sizes before and after
simplification, as the Markdown table kept in the README.

Run: python examples/derivative_table.py
"""

import symgrad as sg
from symgrad.diff.reverse import raw_grad


def linear_regression():
    x1, x2, y = sg.inputs("x1 x2 y")
    w1, w2, b = sg.params("w1 w2 b", init=0.0)
    return sg.mean((w1 * x1 + w2 * x2 + b - y) ** 2), [w1, w2, b]


def softmax_regression():
    X = sg.input("X", shape=("N", 784))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W = sg.param("W", shape=(784, 10))
    c = sg.param("c", shape=(10,))
    return sg.mean(sg.cross_entropy(X @ W + c, labels)), [W, c]


def relu_net():
    X = sg.input("X", shape=("N", 784))
    labels = sg.input("labels", shape=("N",), dtype="int32")
    W1 = sg.param("W1", shape=(784, 100), init=sg.init.glorot(seed=0))
    b1 = sg.param("b1", shape=(100,))
    W2 = sg.param("W2", shape=(100, 10), init=sg.init.glorot(seed=1))
    b2 = sg.param("b2", shape=(10,))
    hidden = sg.relu(X @ W1 + b1)
    return sg.mean(sg.cross_entropy(hidden @ W2 + b2, labels)), [W1, b1, W2, b2]


def main() -> None:
    print("| model | parameter | gradient as printed | nodes before | nodes after |")
    print("| --- | --- | --- | --- | --- |")
    for name, build in [("linear regression", linear_regression),
                        ("softmax regression", softmax_regression),
                        ("784-100-10 ReLU net", relu_net)]:
        loss, params = build()
        for p in params:
            raw, simple = raw_grad(loss, p), sg.grad(loss, p)
            text = str(simple).replace("\n", "<br>").replace("|", "\\|")
            print(f"| {name} | `{p.name}` | `{text}` | {sg.count_ops(raw)} | "
                  f"{sg.count_ops(simple)} |")


if __name__ == "__main__":
    main()
