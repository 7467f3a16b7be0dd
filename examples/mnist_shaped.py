"""The 784-100-10 ReLU network with Adam on MNIST-shaped data, timing the compiled steps.

10,000 random "images" of 784 pixels in [0, 1] (noisy copies of one random template per
class, so there is something to learn), a 784-100-10 ReLU network written with ``sg.nn``, Adam at
lr = 1e-3, batch 128, a few epochs through ``sg.fit``. Prints the loss and how long a
training step takes (loss, gradients and the Adam update in one compiled call).

Run: python examples/mnist_shaped.py [--epochs 3] [--progress]
"""

from __future__ import annotations

import sys
import time

import numpy as np

import symgrad as sg

N_TRAIN, N_TEST, FEATURES, HIDDEN, CLASSES, BATCH = 10_000, 2_000, 784, 100, 10, 128


def make_data(seed: int = 0):
    """MNIST-shaped images: each class is a random sparse "stroke" template, each image its
    class's template with random pixels dropped and noise added (clipped to [0, 1])."""
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_TEST
    templates = (rng.random((CLASSES, FEATURES)) < 0.15).astype(np.float32)
    labels = rng.integers(0, CLASSES, n).astype(np.int32)
    keep = rng.random((n, FEATURES)) < 0.3
    noise = rng.random((n, FEATURES), dtype=np.float32) < 0.25
    images = np.clip(templates[labels] * keep + noise, 0, 1).astype(np.float32)
    train = {"X": images[:N_TRAIN], "labels": labels[:N_TRAIN]}
    test = {"X": images[N_TRAIN:], "labels": labels[N_TRAIN:]}
    return train, test


def main(argv: list[str]) -> dict[str, float]:
    epochs = int(argv[argv.index("--epochs") + 1]) if "--epochs" in argv else 3
    train, test = make_data()

    X = sg.input("X", shape=("N", FEATURES))
    labels = sg.input("labels", dtype="int32")
    logits = sg.nn.linear(sg.relu(sg.nn.linear(X, HIDDEN, name="hidden", seed=0)), CLASSES,
                          name="out", seed=1)
    loss = sg.cross_entropy(logits, labels)  # the mean over the batch
    print("model:", logits)

    start = time.perf_counter()
    step = sg.compile_step(loss, sg.optim.Adam(lr=1e-3))
    batch = {k: v[:BATCH] for k, v in train.items()}
    step.evaluate(**batch)  # compiles the validation function too
    print(f"compiled in {time.perf_counter() - start:.2f} s "
          f"(threads: {sg.get_num_threads()})")
    print(step.plan)

    # the step alone, on one batch of 128: the median of many calls
    saved = [p.value.copy() for p in step.params]
    times = []
    for _ in range(60):
        t0 = time.perf_counter()
        step(**batch)
        times.append(time.perf_counter() - t0)
    for p, v in zip(step.params, saved):  # undo those steps: train from the start
        p.value = v
    step.reset()
    ms_step = 1e3 * float(np.median(times[10:]))
    print(f"\none training step at batch {BATCH}: {ms_step:.3f} ms/step (median)")

    print(f"\ntraining {epochs} epochs of {N_TRAIN} samples, batch {BATCH}:")
    history = sg.fit(step, train, epochs=epochs, batch_size=BATCH, seed=0,
                     progress="--progress" in argv, validation=test)
    steps = len(history.step_loss)
    for e, (tr, va) in enumerate(zip(history.epoch_loss, history.validation_loss), 1):
        print(f"  epoch {e}: loss {tr:.4f}, held-out loss {va:.4f}")
    ms_fit = 1e3 * history.seconds / max(steps, 1)
    print(f"{steps} steps in {history.seconds:.2f} s: {ms_fit:.3f} ms/step "
          f"(in sg.fit, batching included)")

    predict = sg.function(sg.argmax(logits, axis=1))
    acc = float(np.mean(predict(X=test["X"]) == test["labels"]))
    chance = float(np.max(np.bincount(test["labels"], minlength=CLASSES)) / N_TEST)
    print(f"held-out accuracy {acc:.3f} (most frequent class alone: {chance:.3f})")
    return {"ms_step": ms_step, "ms_fit": ms_fit, "accuracy": acc,
            "first_loss": history.step_loss[0], "last_epoch_loss": history.epoch_loss[-1]}


if __name__ == "__main__":
    main(sys.argv[1:])
