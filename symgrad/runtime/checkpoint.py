"""Checkpoints: ``sg.save`` / ``sg.load`` of a training step (or of plain parameters) in the
safetensors format.

A file is an 8-byte little-endian header length, a JSON header mapping each tensor's name to
``{"dtype", "shape", "data_offsets"}`` (plus ``"__metadata__"``: strings by name), then the
raw little-endian bytes. Nothing is unpickled, so a file from anywhere is safe to load; the
reader checks the header (size, JSON, known dtypes, offsets inside the file, byte counts
that match the shapes) and refuses a malformed file with a :class:`CheckpointError`.

Keys: each parameter by its name; each optimizer state array as ``"<param>/<state>"``. The
metadata holds the format version, the optimizer's class, fixed options and
hyperparameters, the step count and the number of skipped steps.

>>> sg.save("run.safetensors", step)
>>> sg.load("run.safetensors", step)     # a step built by the same model code
"""

from __future__ import annotations

import json
import math
import os
import secrets
import struct
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from symgrad.expr.leaves import PARAM
from symgrad.expr.node import Expr
from symgrad.expr.shapes import fmt
from symgrad.runtime.signals import deferred_signals

__all__ = ["CheckpointError", "save", "load", "read_safetensors", "write_safetensors",
           "params_by_name"]

FORMAT = "symgrad-checkpoint"
VERSION = 1
MAX_HEADER = 100_000_000  # bytes; the safetensors library's own limit

# safetensors dtype names -> little-endian NumPy dtypes (BF16 and FP8 have no NumPy dtype)
_FROM_ST = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
            "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
            "BOOL": "?"}
_TO_ST = {np.dtype(v).newbyteorder("="): k for k, v in _FROM_ST.items()}


class CheckpointError(ValueError):
    """A checkpoint file that is malformed, or that does not fit the step or parameters it
    is loaded into. Nothing was changed."""


# -- names -----------------------------------------------------------------------------------

def params_by_name(params: Iterable[Expr], what: str) -> dict[str, Expr]:
    """``params`` by name; two different parameters with one name are refused (a mapping
    by name would silently keep only one of them)."""
    named: dict[str, Expr] = {}
    for p in params:
        if not isinstance(p, Expr) or p.op is not PARAM:
            raise TypeError(f"{what}: expected symgrad parameters (sg.param), got {p!r}")
        other = named.get(p.arg.name)
        if other is not None and other.arg is not p.arg:
            raise ValueError(
                f"{what}: two different parameters are named {p.arg.name!r} (shapes "
                f"{fmt(other.arg.shape)} and {fmt(p.arg.shape)}); names must be unique: pass "
                f"name=... to the layers that made them (sg.nn.linear(..., name='...')) or "
                f"give the parameters different names (sg.param('...'))")
        named[p.arg.name] = p
    return named


def _step_entries(step: Any, what: str) -> dict[str, Expr]:
    """Every array a step's checkpoint holds, by key: parameters, then optimizer state."""
    entries = dict(params_by_name(step.params, what))
    for p, state in step._state.items():
        for sname, node in state.items():
            key = f"{p.arg.name}/{sname}"
            if key in entries:  # e.g. a parameter named "w/exp_avg" beside w's state
                raise ValueError(f"{what}: the key {key!r} of parameter {p.arg.name!r}'s "
                                 f"optimizer state {sname!r} is also a parameter's name; "
                                 f"rename that parameter")
            entries[key] = node
    if "__metadata__" in entries:
        raise ValueError(f"{what}: a parameter may not be named '__metadata__' (the format "
                         f"reserves it)")
    return entries


# -- the file format -------------------------------------------------------------------------

def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (and string ``metadata``) to ``path`` in the safetensors format,
    atomically: a temporary file in the same folder, flushed and fsync'd, then renamed over
    ``path`` (a crash mid-way leaves the previous file whole)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    arrays = []
    offset = 0
    for name, value in tensors.items():
        arr = np.asarray(value)
        if name == "__metadata__":
            raise ValueError("write_safetensors: '__metadata__' is not a tensor name")
        if arr.dtype.newbyteorder("=") not in _TO_ST:
            raise TypeError(f"write_safetensors: tensor {name!r} has dtype {arr.dtype}, which "
                            f"the format does not store")
        # (not np.ascontiguousarray: it turns a 0-d array into shape (1,))
        arr = np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C")
        header[name] = {"dtype": _TO_ST[arr.dtype.newbyteorder("=")], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors does
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    # os.open applies the umask to 0o666, so the file gets the usual permissions
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for arr in arrays:
                f.write(arr.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; not every platform can open a folder
        dfd = os.open(target.parent if str(target.parent) else ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {k!r} appears twice")
        out[k] = v
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors (new writable arrays, by name) and the metadata of a safetensors file.

    The file is checked, not trusted: a malformed one raises :class:`CheckpointError`.
    """
    where = f"checkpoint {os.fspath(path)!r}"
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise CheckpointError(f"{where}: {size} bytes, too short for a safetensors file")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER or n > size - 8:
            raise CheckpointError(f"{where}: the header claims {n} bytes but the file has "
                                  f"{size - 8} after the length (limit {MAX_HEADER}): not a "
                                  f"safetensors file, or a truncated one")
        raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(f"{where}: the header is not valid JSON ({exc})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{where}: the header must be a JSON object, got "
                                  f"{type(header).__name__}")
        buffer = f.read()
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str)
                                                 for v in metadata.values()):
        raise CheckpointError(f"{where}: '__metadata__' must map strings to strings")
    spans = []
    for name, entry in header.items():
        bad = f"{where}: tensor {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise CheckpointError(f"{bad}: expected an object with dtype, shape and "
                                  f"data_offsets, got {str(entry)[:200]}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _FROM_ST:
            raise CheckpointError(f"{bad}: unknown dtype {str(dtype)[:40]!r} (known: "
                                  f"{', '.join(_FROM_ST)})")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise CheckpointError(f"{bad}: the shape must be a list of non-negative ints, "
                                  f"got {str(shape)[:200]}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_int(o) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= len(buffer)):
            raise CheckpointError(f"{bad}: data_offsets must be [begin, end] within the "
                                  f"{len(buffer)} data bytes, got {str(offsets)[:200]}")
        dt = np.dtype(_FROM_ST[dtype])
        need = math.prod(shape) * dt.itemsize
        if offsets[1] - offsets[0] != need:
            raise CheckpointError(f"{bad}: shape {tuple(shape)} of {dtype} needs {need} bytes, "
                                  f"its data_offsets span {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
        if begin < end:
            raise CheckpointError(f"{where}: the data of tensors {first!r} and {second!r} "
                                  f"overlap")
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dt = np.dtype(_FROM_ST[entry["dtype"]])
        raw_bytes = np.frombuffer(buffer, np.uint8, end - begin, begin)
        if dt == np.bool_ and raw_bytes.size and raw_bytes.max() > 1:
            raise CheckpointError(f"{where}: tensor {name!r} is BOOL but holds bytes other "
                                  f"than 0 and 1")
        arr = raw_bytes.view(dt).reshape(entry["shape"]).astype(dt.newbyteorder("="))
        tensors[name] = arr
    return tensors, dict(metadata)


# -- save and load ---------------------------------------------------------------------------

def _check_target(step: Any, params: Sequence[Expr] | None, what: str) -> None:
    from symgrad.runtime.step import Step

    if (step is None) == (params is None):
        raise TypeError(f"{what}: pass a training step (sg.compile_step) or params=[...], "
                        f"exactly one of them")
    if step is not None and not isinstance(step, Step):
        raise TypeError(f"{what}: expected a training step from sg.compile_step, got "
                        f"{type(step).__name__}; for parameters alone pass params=[...]")
    if params is not None and (isinstance(params, Expr) or isinstance(params, (str, bytes))):
        raise TypeError(f"{what}: params must be a list of parameters, got "
                        f"{type(params).__name__}")


def save(path: str | os.PathLike, step: Any = None, *,
         params: Sequence[Expr] | None = None, comm: Any = None) -> None:
    """Save a training step (every parameter, the optimizer state, the step count, the
    skipped steps and the hyperparameters), or only ``params``, to ``path`` (safetensors,
    written atomically).

    Data-parallel (``comm``, by default a step's own): a collective call; rank 0 writes
    (the processes hold the same values) and every process raises the same error if it
    failed.

    >>> sg.save("run.safetensors", step)
    >>> sg.save("weights.safetensors", params=[W, b])
    """
    _check_target(step, params, "sg.save")
    comm = comm if comm is not None else getattr(step, "comm", None)
    if comm is None:
        _save(path, step, params)
        return
    from symgrad.runtime import distributed

    distributed.agree(comm, "sg.save", lambda: _save(path, step, params)
                      if comm.Get_rank() == 0 else None)


def _save(path: str | os.PathLike, step: Any, params: Sequence[Expr] | None) -> None:
    if step is None:
        entries = params_by_name(params, "sg.save")
        if "__metadata__" in entries:
            raise ValueError("sg.save: a parameter may not be named '__metadata__'")
        metadata = {"format": FORMAT, "version": str(VERSION), "kind": "params"}
    else:
        entries = _step_entries(step, "sg.save")
        opt = step.optimizer
        metadata = {"format": FORMAT, "version": str(VERSION), "kind": "step",
                    "optimizer": type(opt).__name__,
                    "options": json.dumps(opt.options, sort_keys=True),
                    "hyper": json.dumps(opt.hyper, sort_keys=True),
                    "step_count": repr(float(_read(step._count))),
                    "skipped": str(int(getattr(step, "skipped", 0)))}
    write_safetensors(path, {k: _read(node) for k, node in entries.items()}, metadata)


def _read(node: Expr) -> np.ndarray:
    """A parameter's current value; ``snapshot`` (where there is one) leaves a GPU copy
    valid, where reading ``value`` would make the next step upload it again."""
    slot = node.arg
    return slot.snapshot() if hasattr(slot, "snapshot") else slot.value


def _listing(names: Iterable[str], limit: int = 8) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(map(repr, names[:limit])) + more


def _match(where: str, tensors: Mapping[str, np.ndarray], entries: Mapping[str, Expr],
           ignore: Iterable[str] = ()) -> None:
    """Refuse a file whose arrays are not exactly ``entries`` in shape and dtype."""
    ignored = set(ignore)
    missing = set(entries) - set(tensors)
    extra = set(tensors) - set(entries) - ignored
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"it lacks {_listing(missing)}")
        if extra:
            parts.append(f"it holds {_listing(extra)}, which the model does not have")
        raise CheckpointError(f"{where} does not fit: {'; '.join(parts)}")
    for key, node in entries.items():
        arr, slot = tensors[key], node.arg
        if arr.shape != slot.shape or arr.dtype != slot.dtype:
            raise CheckpointError(f"{where} does not fit: {key!r} is {arr.dtype} of shape "
                                  f"{fmt(arr.shape)} in the file, {slot.dtype} of shape "
                                  f"{fmt(slot.shape)} in the model")


def _meta_json(where: str, metadata: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(metadata[key])
    except KeyError:
        raise CheckpointError(f"{where}: its metadata lacks {key!r}") from None
    except (ValueError, RecursionError):
        raise CheckpointError(f"{where}: its metadata {key!r} is not valid JSON") from None


def _checked_hyper(where: str, opt: Any, values: Any) -> dict[str, float]:
    """The file's hyperparameters, checked as the optimizer's constructor checks them."""
    from symgrad.runtime import optim

    owner = type(opt).__name__
    if not isinstance(values, dict) or set(values) != set(opt.hyper):
        got = sorted(values) if isinstance(values, dict) else values
        raise CheckpointError(f"{where}: its hyperparameters {got} are not those of this "
                              f"{owner} ({sorted(opt.hyper)})")
    try:
        checked = {k: optim._number(owner, k, v) for k, v in values.items()}
        for k, v in checked.items():
            if k in opt._bounds:
                optim._check_range(owner, k, v, opt._bounds[k])
        opt._check_together({**opt.options, **checked})
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{where}: its hyperparameters are not valid: {exc}") from None
    return checked


def _whole_number(where: str, metadata: Mapping[str, str], key: str) -> float:
    text = metadata.get(key)
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: its metadata {key!r} must be a number, got "
                              f"{str(text)[:40]!r}") from None
    if not (math.isfinite(value) and value >= 0 and value == int(value)):
        raise CheckpointError(f"{where}: its metadata {key!r} must be a whole number >= 0, "
                              f"got {text!r}")
    return value


def load(path: str | os.PathLike, step: Any = None, *,
         params: Sequence[Expr] | None = None, comm: Any = None) -> None:
    """Load a checkpoint written by :func:`save` into ``step`` (a step compiled from the same
    model code) or into ``params``. Everything is checked before anything is written: a
    missing or extra array, another shape or dtype, another optimizer or a malformed file
    raises :class:`CheckpointError` and changes nothing. Training then continues exactly as
    if it had never stopped (the hyperparameters are restored too: set ``step.optimizer.lr``
    after loading to change it).

    ``params=[...]`` loads parameters alone, from a parameters file, a step's checkpoint
    (its optimizer state is ignored) or any safetensors file with those names.

    Data-parallel (``comm``, by default a step's own): a collective call; every process
    reads and checks the file (it must reach it, e.g. on a shared filesystem), and writes
    only once every process has passed; else every process raises the same error.
    """
    _check_target(step, params, "sg.load")
    comm = comm if comm is not None else getattr(step, "comm", None)
    if comm is None:
        _checked_load(path, step, params)()
        return
    from symgrad.runtime import distributed

    distributed.agree(comm, "sg.load", lambda: _checked_load(path, step, params))()


def _checked_load(path: str | os.PathLike, step: Any,
                  params: Sequence[Expr] | None) -> Callable[[], None]:
    """Read and check the file for ``load``; returns what writes it (nothing written)."""
    where = f"checkpoint {os.fspath(path)!r}"
    # names first: a model that cannot be loaded by name is refused before reading
    entries = (params_by_name(params, "sg.load") if step is None
               else _step_entries(step, "sg.load"))
    tensors, metadata = read_safetensors(path)
    ours = metadata.get("format") == FORMAT
    if ours:
        version = metadata.get("version", "")
        if not (version.isascii() and version.isdigit()) or int(version) > VERSION:
            raise CheckpointError(f"{where}: format version {version!r}; this symgrad reads "
                                  f"versions up to {VERSION} (a newer symgrad wrote it?)")
    if step is None:
        state_keys = ([k for k in tensors if "/" in k]
                      if ours and metadata.get("kind") == "step" else [])
        _match(where, tensors, entries, ignore=state_keys)

        def write_params() -> None:
            with deferred_signals():  # every parameter loaded, or none
                for key, node in entries.items():
                    node.arg.assign(tensors[key])
        return write_params
    if not ours or metadata.get("kind") != "step":
        raise CheckpointError(f"{where}: not the checkpoint of a training step (its metadata "
                              f"names no optimizer); sg.load(path, params=[...]) loads "
                              f"parameters alone")
    opt = step.optimizer
    owner = type(opt).__name__
    if metadata.get("optimizer") != owner:
        raise CheckpointError(f"{where}: it holds the state of a {metadata.get('optimizer')} "
                              f"optimizer, this step's optimizer is {owner}")
    options = _meta_json(where, metadata, "options")
    mine = json.loads(json.dumps(opt.options, sort_keys=True))
    if options != mine:
        raise CheckpointError(f"{where}: its {owner} was built with options {options}, this "
                              f"step's with {mine}")
    hyper = _checked_hyper(where, opt, _meta_json(where, metadata, "hyper"))
    count = _whole_number(where, metadata, "step_count")
    skipped = int(_whole_number(where, metadata, "skipped"))
    _match(where, tensors, entries)

    def write_step() -> None:  # everything checked: write all of it or (Ctrl-C) none
        with deferred_signals():
            for key, node in entries.items():
                node.arg.assign(tensors[key])
            step._count.arg.assign(np.float64(count))
            opt.hyper.update(hyper)
            if hasattr(step, "skipped"):
                step.skipped = skipped
    return write_step
