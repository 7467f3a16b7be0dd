"""Checkpoints (``sg.save`` / ``sg.load``): every parameter, the optimizer state, the step
count and the hyperparameters in the safetensors format, read defensively, written
atomically; resuming in a fresh process continues bit for bit. Also: parameter names that
collide are refused by everything keyed by name, and default layer names are unique."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.runtime import checkpoint


def model(prefix="m", hidden=5, classes=3, dtype="float32", opt=None, init_seed=0):
    X = sg.input("X", shape=("N", 4), dtype=dtype)
    y = sg.input("y", dtype="int32")
    h = sg.nn.relu(sg.nn.linear(X, hidden, name=f"{prefix}h", seed=init_seed, dtype=dtype))
    logits = sg.nn.linear(h, classes, name=f"{prefix}o", seed=init_seed + 1, dtype=dtype)
    return sg.compile_step(sg.cross_entropy(logits, y), opt or sg.optim.Adam(lr=0.05))


def batch(seed=0, n=8, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {"X": rng.normal(size=(n, 4)).astype(dtype), "y": rng.integers(0, 3, n, np.int32)}


def snapshot(step):
    """Every array of a step (params and state), its step count and hyperparameters."""
    arrays = {p.name: np.array(p.arg.value) for p in step.params}
    for name, state in step.optimizer_state.items():
        arrays.update({f"{name}/{k}": v for k, v in state.items()})
    return arrays, step.step_count, dict(step.optimizer.hyper)


def assert_same(a, b):
    arrays_a, count_a, hyper_a = a
    arrays_b, count_b, hyper_b = b
    assert arrays_a.keys() == arrays_b.keys() and count_a == count_b and hyper_a == hyper_b
    for k in arrays_a:
        assert arrays_a[k].dtype == arrays_b[k].dtype, k
        np.testing.assert_array_equal(arrays_a[k], arrays_b[k], err_msg=k)


def test_load_into_a_new_step_restores_everything_and_continues_exactly(tmp_path):
    path = tmp_path / "run.safetensors"
    a = model(init_seed=0)
    for i in range(3):
        a(**batch(i))
    a.optimizer.lr = 0.02
    sg.save(path, a)
    b = model(init_seed=7)  # other initial values, another lr and no steps yet
    b.optimizer.lr = 0.5
    sg.load(path, b)
    assert_same(snapshot(a), snapshot(b))
    assert b.step_count == 3 and b.optimizer.lr == 0.02
    for i in range(3, 5):  # Adam's bias correction goes on from t = 4
        assert a(**batch(i)) == b(**batch(i))
    assert_same(snapshot(a), snapshot(b))


RESUME_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import symgrad as sg

    steps, src, dst = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    X = sg.input("X", shape=("N", 6))
    y = sg.input("y", dtype="int32")
    logits = sg.nn.mlp(X, [8, 3])  # default layer names: the same in every fresh process
    step = sg.compile_step(sg.cross_entropy(logits, y), sg.optim.AdamW(lr=0.05))
    rng = np.random.default_rng(1)
    batches = [{"X": rng.normal(size=(16, 6)).astype(np.float32),
                "y": rng.integers(0, 3, 16).astype(np.int32)} for _ in range(12)]
    if src != "-":
        sg.load(src, step)
    start = step.step_count
    for i in range(start, start + steps):
        step(**batches[i])
    sg.save(dst, step)
""")


def test_resume_in_a_fresh_process_continues_bit_for_bit(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT)

    def run(*args):
        subprocess.run([sys.executable, str(script), *map(str, args)], check=True,
                       cwd=tmp_path, timeout=300)

    first, resumed, straight = (tmp_path / f"{n}.safetensors" for n in "abc")
    run(3, "-", first)
    run(4, first, resumed)
    run(7, "-", straight)
    got, meta = checkpoint.read_safetensors(resumed)
    want, want_meta = checkpoint.read_safetensors(straight)
    assert meta == want_meta and float(meta["step_count"]) == 7
    assert sorted(got) == sorted(want) and "mlp0_W/exp_avg_sq" in got
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    first_values, _ = checkpoint.read_safetensors(first)
    assert not np.array_equal(first_values["mlp0_W"], want["mlp0_W"])  # it did train on


def test_the_safetensors_library_reads_ours_and_we_read_its(tmp_path):
    stn = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    step = model(opt=sg.optim.SGD(lr=0.1, momentum=0.9))
    step(**batch())
    sg.save(tmp_path / "ours.safetensors", step)
    theirs = stn.load_file(str(tmp_path / "ours.safetensors"))
    mine, meta = checkpoint.read_safetensors(tmp_path / "ours.safetensors")
    assert sorted(theirs) == sorted(mine) == sorted(
        [p.name for p in step.params] + [f"{p.name}/momentum_buffer" for p in step.params])
    for k in mine:
        np.testing.assert_array_equal(theirs[k], mine[k])
        np.testing.assert_array_equal(theirs[k], snapshot(step)[0][k])
    with safe_open(str(tmp_path / "ours.safetensors"), "np") as f:
        assert f.metadata() == meta and meta["optimizer"] == "SGD"

    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array(2.5),
              "n": np.array([1, -2], np.int32), "mask": np.array([True, False]),
              "empty": np.zeros((0, 3), np.float32)}
    stn.save_file(arrays, str(tmp_path / "theirs.safetensors"), metadata={"by": "them"})
    read, meta = checkpoint.read_safetensors(tmp_path / "theirs.safetensors")
    assert meta == {"by": "them"} and sorted(read) == sorted(arrays)
    for k, v in arrays.items():
        assert read[k].dtype == v.dtype and read[k].shape == v.shape
        np.testing.assert_array_equal(read[k], v)
    params = [sg.param("w", shape=(2, 3)), sg.param("b", dtype="float64"),
              sg.param("n", shape=(2,), dtype="int32"), sg.param("mask", shape=(2,),
                                                               dtype="bool"),
              sg.param("empty", shape=(0, 3))]
    sg.load(tmp_path / "theirs.safetensors", params=params)
    for p in params:
        np.testing.assert_array_equal(p.arg.value, arrays[p.name])


def test_params_alone_save_and_load_and_from_a_steps_checkpoint(tmp_path):
    W = sg.param("W", init=np.arange(6.0).reshape(2, 3), dtype="float32")
    b = sg.param("b", init=[1.0, 2.0, 3.0])
    s = sg.param("s", init=2.5, dtype="float64")
    sg.save(tmp_path / "p.safetensors", params=[W, b, s])
    W2, b2, s2 = sg.param("W", shape=(2, 3)), sg.param("b", shape=(3,)), sg.param(
        "s", dtype="float64")
    sg.load(tmp_path / "p.safetensors", params=[W2, b2, s2])
    np.testing.assert_array_equal(W2.arg.value, W.arg.value)
    np.testing.assert_array_equal(b2.arg.value, b.arg.value)
    assert s2.arg.value.shape == () and float(s2.arg.value) == 2.5
    step = model()
    step(**batch())
    sg.save(tmp_path / "s.safetensors", step)
    fresh = model(init_seed=5)
    sg.load(tmp_path / "s.safetensors", params=fresh.params)  # the state is left out
    for p, q in zip(step.params, fresh.params):
        np.testing.assert_array_equal(p.arg.value, q.arg.value)
    assert fresh.step_count == 0
    with pytest.raises(sg.CheckpointError, match="not the checkpoint of a training step"):
        sg.load(tmp_path / "p.safetensors", model())
    with pytest.raises(TypeError, match="exactly one"):
        sg.save(tmp_path / "x.safetensors")


def _mismatches():
    """(name, build the step loaded into, words the error must hold)."""
    return [
        ("shape", lambda: model(hidden=6), r"'mh_W'.*shape \(4, 5\) in the file.*\(4, 6\)"),
        ("dtype", lambda: model(dtype="float64"), r"'mh_W' is float32.*float64"),
        ("extra", lambda: model(prefix="q"), r"lacks 'qh_W'.*holds 'mh_W'"),
        ("optimizer", lambda: model(opt=sg.optim.SGD(lr=0.1)), r"Adam optimizer.*is SGD"),
        ("options", lambda: model(opt=sg.optim.Adam(amsgrad=True)), "amsgrad"),
    ]


@pytest.mark.parametrize("case", _mismatches(), ids=lambda c: c[0])
def test_a_checkpoint_that_does_not_fit_is_refused_and_changes_nothing(tmp_path, case):
    _, build, words = case
    source = model()
    source(**batch())
    sg.save(tmp_path / "c.safetensors", source)
    target = build()
    target(**batch(3))
    target.optimizer.lr = 0.03
    before = snapshot(target)
    with pytest.raises(sg.CheckpointError, match=words):
        sg.load(tmp_path / "c.safetensors", target)
    assert_same(snapshot(target), before)


def test_a_checkpoint_lacking_a_parameter_names_it(tmp_path):
    X = sg.input("X", shape=("N", 4))
    w = sg.param("only_w", shape=(4,), init=0.5)
    small = sg.compile_step(sg.mean((X @ w) ** 2), sg.optim.SGD(lr=0.1))
    sg.save(tmp_path / "s.safetensors", small)
    v = sg.param("extra_v", init=1.0)
    w2 = sg.param("only_w", shape=(4,), init=0.0)
    big = sg.compile_step(sg.mean((X @ w2 + v) ** 2), sg.optim.SGD(lr=0.1))
    with pytest.raises(sg.CheckpointError, match="lacks 'extra_v'"):
        sg.load(tmp_path / "s.safetensors", big)
    assert float(w2.arg.value[0]) == 0.0 and float(v.arg.value) == 1.0


def test_bad_hyperparameters_in_the_metadata_are_refused(tmp_path):
    step = model()
    sg.save(tmp_path / "c.safetensors", step)
    tensors, meta = checkpoint.read_safetensors(tmp_path / "c.safetensors")
    for key, value, words in [("hyper", json.dumps({"lr": 0.1}), "hyperparameters"),
                              ("hyper", json.dumps({**step.optimizer.hyper, "lr": -1.0}),
                               "learning rate"),
                              ("step_count", "2.5", "whole number"),
                              ("version", "99", "newer symgrad")]:
        checkpoint.write_safetensors(tmp_path / "bad.safetensors", tensors,
                                     {**meta, key: value})
        target = model()
        before = snapshot(target)
        with pytest.raises(sg.CheckpointError, match=words):
            sg.load(tmp_path / "bad.safetensors", target)
        assert_same(snapshot(target), before)


# -- malformed and hostile files -------------------------------------------------------------

def _file(header: object, data: bytes = b"", raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


MALFORMED = [
    ("short", b"abc", "too short"),
    ("huge header", struct.pack("<Q", 2**63) + b"{}", "header claims"),
    ("past the end", struct.pack("<Q", 50) + b"{}", "header claims"),
    ("not json", _file(None, raw=b"{nope"), "not valid JSON"),
    ("not utf8", _file(None, raw=b"\xff\xfe"), "not valid JSON"),
    ("a list", _file([1, 2]), "must be a JSON object"),
    ("deep", _file(None, raw=b"[" * 100_000 + b"]" * 100_000), "not valid JSON"),
    ("duplicate key", _file(None, raw=b'{"a": {}, "a": {}}'), "twice"),
    ("unknown dtype", _file({"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}},
                            b"\0" * 4), "unknown dtype"),
    ("bad shape", _file({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
                        b"\0" * 4), "shape must be"),
    ("bool shape", _file({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}},
                         b"\0" * 4), "shape must be"),
    ("outside", _file({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                      b"\0" * 4), "within the 4 data bytes"),
    ("byte count", _file({"w": {"dtype": "F32", "shape": [10**30], "data_offsets": [0, 4]}},
                         b"\0" * 4), "needs"),
    ("overlap", _file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
                      b"\0" * 8), "overlap"),
    ("bool bytes", _file({"m": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}},
                         b"\x01\x07"), "other than 0 and 1"),
    ("metadata", _file({"__metadata__": {"a": 1}}), "strings to strings"),
    ("entry keys", _file({"w": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "data_offsets"),
]


@pytest.mark.parametrize("name,content,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_a_malformed_file_gets_a_clear_error(tmp_path, name, content, words):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(sg.CheckpointError, match=words):
        checkpoint.read_safetensors(path)
    w = sg.param("w", shape=(1,), init=3.0)
    with pytest.raises(sg.CheckpointError):
        sg.load(path, params=[w])
    assert float(w.arg.value[0]) == 3.0


_STEP = None


def _fuzz_step():
    global _STEP
    if _STEP is None:
        _STEP = model(prefix="fz")
    return _STEP


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_corrupted_checkpoint_loads_or_is_refused_never_crashes(tmp_path_factory, data):
    step = _fuzz_step()
    folder = tmp_path_factory.mktemp("fuzz")
    sg.save(folder / "good.safetensors", step)
    raw = bytearray((folder / "good.safetensors").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    (folder / "bad.safetensors").write_bytes(bytes(raw))
    before = snapshot(step)
    try:
        sg.load(folder / "bad.safetensors", step)
    except sg.CheckpointError:
        assert_same(snapshot(step), before)  # refused: nothing changed


# -- atomic writes ---------------------------------------------------------------------------

def test_a_save_that_fails_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.safetensors"
    step = model()
    sg.save(path, step)
    previous = path.read_bytes()
    step(**batch())

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        sg.save(path, step)
    monkeypatch.undo()
    assert path.read_bytes() == previous
    assert os.listdir(tmp_path) == ["run.safetensors"]  # no temporary file left behind
    sg.save(path, step)
    assert path.read_bytes() != previous and os.listdir(tmp_path) == ["run.safetensors"]


# -- names -----------------------------------------------------------------------------------

def test_default_layer_names_are_unique_and_explicit_names_are_kept():
    X = sg.input("X", shape=("N", 4))
    first, second = sg.nn.mlp(X, [3, 2]), sg.nn.mlp(X, [3, 2])
    names = [{p.name for p in sg.compile_step(sg.mean(out), sg.optim.SGD(lr=0.1)).params}
             for out in (first, second)]
    assert len(names[0]) == len(names[1]) == 4 and not names[0] & names[1]
    lin = [sg.nn.linear(X, 2) for _ in range(3)]
    lin_names = [str(e) for e in lin]
    assert len(set(lin_names)) == 3
    assert all(s.startswith("X@linear") for s in lin_names)
    assert str(sg.nn.linear(X, 2, name="fc")) == str(sg.nn.linear(X, 2, name="fc")) == \
        "X@fc_W + fc_b"
    both = sg.nn.linear(first, 1) + sg.nn.linear(second, 1)
    step = sg.compile_step(sg.mean(both), sg.optim.Adam())
    assert len(step.optimizer_state) == len(step.params) == 12


def test_two_parameters_with_one_name_are_refused_by_everything_keyed_by_name(tmp_path):
    X = sg.input("X", shape=("N", 4))
    out = sg.nn.linear(sg.nn.linear(X, 3, name="dup"), 2, name="dup")
    step = sg.compile_step(sg.mean(out), sg.optim.Adam())
    words = r"'dup_W'.*shapes \(4, 3\) and \(3, 2\).*name="
    with pytest.raises(ValueError, match=words):
        _ = step.optimizer_state
    with pytest.raises(ValueError, match=words):
        sg.save(tmp_path / "d.safetensors", step)
    assert not (tmp_path / "d.safetensors").exists()
    with pytest.raises(ValueError, match=words):
        sg.load(tmp_path / "d.safetensors", params=step.params)
    data = {"X": np.ones((4, 4), np.float32)}
    with pytest.raises(ValueError, match=words):
        sg.fit(step, data, checkpoint=tmp_path / "d.safetensors", progress=False)
    assert step.step_count == 0


# -- a step on the GPU (the CUDA emulator of tests/cuda) --------------------------------------

@pytest.fixture
def emulator():
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cuda")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    from emulated_driver import EmulatedDriver, gxx_available

    from symgrad.runtime import cuda_driver

    if not gxx_available():
        pytest.skip("the CUDA emulator (tests/cuda) needs g++ with -std=c++20")
    cuda_driver.set_driver(EmulatedDriver())
    yield
    cuda_driver.set_driver(None)


def test_a_step_on_the_gpu_saves_its_device_values_and_resumes(tmp_path, emulator):
    def make():
        X = sg.input("X", shape=("N", 4))
        y = sg.input("y", dtype="int32")
        logits = sg.nn.linear(X, 3, name="gpu", seed=0)
        return sg.compile_step(sg.cross_entropy(logits, y), sg.optim.Adam(lr=0.05),
                               backend="cuda")

    step = make()
    for i in range(2):
        step(**batch(i))  # the newest values are on the device only
    sg.save(tmp_path / "g.safetensors", step)
    saved, meta = checkpoint.read_safetensors(tmp_path / "g.safetensors")
    assert float(meta["step_count"]) == 2
    twin = make()
    twin(**batch(9))  # its device copies are now newer than the host: the load must win
    sg.load(tmp_path / "g.safetensors", twin)
    assert_same(snapshot(twin), snapshot(step))
    np.testing.assert_array_equal(saved["gpu_W/exp_avg"], snapshot(step)[0]["gpu_W/exp_avg"])
    assert step(**batch(2)) == twin(**batch(2))
    assert_same(snapshot(twin), snapshot(step))
