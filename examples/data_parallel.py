"""Data-parallel training over MPI: a one-hidden-layer ReLU net on scikit-learn's bundled
8x8 digits, every process stepping on its shard of each minibatch.

Run on one machine, 4 processes:   mpiexec -n 4 python examples/data_parallel.py
On a cluster (MPICH's mpiexec):   mpiexec -hosts node1,node2 -n 8 python examples/data_parallel.py
Under Slurm:                       srun -n 8 python examples/data_parallel.py
Without mpiexec it runs as one process. Needs the mpi extra: pip install -e ".[mpi]".
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from mpi4py import MPI
from sklearn.datasets import load_digits

import symgrad as sg

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
sg.set_num_threads(max(1, (os.cpu_count() or 1) // size))  # (processes on one machine)

# every process reads the same data; fit hands each its shard of every minibatch (with
# arrays too large for memory, np.load(path, mmap_mode="r") reads only those rows)
digits = load_digits()
images, targets = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int32)
order = np.random.default_rng(0).permutation(len(targets))
train, test = order[:1400], order[1400:]

X = sg.input("X", shape=("N", 64))
labels = sg.input("labels", shape=("N",), dtype="int32")
W1 = sg.param("W1", shape=(64, 64), init=sg.init.glorot())  # unseeded: rank 0's is used
b1 = sg.param("b1", shape=(64,))
W2 = sg.param("W2", shape=(64, 10), init=sg.init.glorot())
b2 = sg.param("b2", shape=(10,))
logits = sg.relu(X @ W1 + b1) @ W2 + b2
loss = sg.mean(sg.cross_entropy(logits, labels))

# the sums over the batch (the loss, every gradient) are reduced across the processes
# before the update: every process applies the update of the whole minibatch
step = sg.compile_step(loss, sg.optim.Adam(lr=1e-2), comm=comm)
checkpoint = os.path.join(tempfile.gettempdir(), "symgrad-data-parallel.safetensors")
history = sg.fit(step, {"X": images[train], "labels": targets[train]}, epochs=8,
                 batch_size=100, seed=0, progress=False, checkpoint=checkpoint,
                 validation={"X": images[test], "labels": targets[test]})

# a metric over data split across processes: the same number on every process
accuracy = sg.distributed.data_parallel(
    sg.function(sg.mean(sg.where(sg.equal(sg.argmax(logits, axis=1), labels), 1.0, 0.0))),
    comm)
mine = test[sg.distributed.shard_of(len(test), rank, size)]
test_accuracy = float(accuracy(X=images[mine], labels=targets[mine]))

if rank == 0:  # the history and the parameters are the same on every process
    print(f"{size} process(es), {len(history.step_loss)} steps of 100 samples")
    print(f"loss: first step {history.step_loss[0]:.4f}, last epoch "
          f"{history.epoch_loss[-1]:.4f}, validation {history.validation_loss[-1]:.4f}")
    print(f"test accuracy: {test_accuracy:.3f}")
    print(f"checkpoint (written by rank 0): {checkpoint}")
