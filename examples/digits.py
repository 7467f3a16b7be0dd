"""Softmax regression and a one-hidden-layer ReLU network on scikit-learn's bundled 8x8
digits (real data, no download), trained through compiled steps with ``sg.fit``.

Run: python examples/digits.py [--plot loss.png]
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.datasets import load_digits

import symgrad as sg


def load(seed: int = 0):
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)  # pixels 0..16 -> 0..1
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(0.8 * len(labels))
    train, test = order[:cut], order[cut:]
    return (images[train], labels[train]), (images[test], labels[test])


def accuracy(logits, images, labels) -> float:
    predict = sg.function(sg.argmax(logits, axis=1))
    return float(np.mean(predict(X=images) == labels))


def train(logits, optimizer, train_data, test_data, epochs, progress=False, plot=None):
    (x_train, y_train), (x_test, y_test) = train_data, test_data
    labels = sg.input("labels", dtype="int32")
    loss = sg.mean(sg.cross_entropy(logits, labels))
    step = sg.compile_step(loss, optimizer)
    history = sg.fit(step, {"X": x_train, "labels": y_train}, epochs=epochs, batch_size=64,
                     seed=0, progress=progress,
                     validation={"X": x_test, "labels": y_test})
    if plot:
        print("loss curve written to", history.plot(plot))
    return step, history, accuracy(logits, x_test, y_test)


def main(argv: list[str]) -> dict[str, float]:
    plot = argv[argv.index("--plot") + 1] if "--plot" in argv else None
    train_data, test_data = load()
    X = sg.input("X", shape=("N", 64))
    results = {}

    logits = sg.nn.linear(X, 10, name="softmax", seed=0)
    step, history, acc = train(logits, sg.optim.SGD(lr=0.5), train_data, test_data, 30,
                               progress=True, plot=plot)
    print(f"softmax regression: test accuracy {acc:.3f} after {len(history.step_loss)} steps"
          f" ({history.seconds:.2f} s); final validation loss {history.validation_loss[-1]:.4f}")
    W = step.params[0]
    print("d loss/d W =", step.derivatives[W])
    results["softmax"] = acc

    hidden = sg.relu(sg.nn.linear(X, 64, name="hidden", seed=1))
    logits = sg.nn.linear(hidden, 10, name="out", seed=2)
    step, history, acc = train(logits, sg.optim.Adam(lr=3e-3), train_data, test_data, 30)
    print(f"one hidden layer (64 ReLU): test accuracy {acc:.3f} after "
          f"{len(history.step_loss)} steps ({history.seconds:.2f} s)")
    results["hidden"] = acc
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
