"""The disk cache of compiled code: checksummed entries, claimed before their first load, in
folders bounded in size (least recently used first).

Both compiled-code caches use it: LLVM object code (``jit.py``, folder ``llvm/``) and CUDA
cubins (``cuda_compile.py``, folder ``cuda/``), under ``cache_dir()``.

>>> objects = DiskCache("llvm", "symgrad-llvm-object 1", ".sgobj", ("object", "ir"))
>>> objects.store(digest, {"object": code, "ir": ir_text.encode()})
>>> lib = objects.load(digest, lambda parts: load_library(parts["object"], parts["ir"]))

An entry is one file: a format line, a JSON header line (each part's size, the sha256 of the
payload), then the parts. Why it is built this way:

- **Entries are checksummed**, so a torn or bit-flipped file is never handed to a loader
  (llvmlite aborts or segfaults the process on a malformed object file rather than raising).
  A loader may still reject an entry (``rejects``): the entry is then deleted.
- **A new entry is claimed before its first load.** A checksummed entry can still be one that
  crashes its loader (a bad relocation, say), and a crashing entry left in place would crash
  every later process. ``<name><suffix>`` is renamed to a claim naming the loading process,
  loaded, then renamed to ``<name>.ok<suffix>``, which later processes load directly. A process
  that dies loading leaves its claim where no lookup looks (the next process compiles again);
  a later write deletes claims whose process is gone. The rename is atomic: of two processes
  loading the same new entry one loads it and the other compiles.
- **Each folder is bounded**, least recently used first: a hit touches the file's mtime; a
  write that takes the folder over ``cache_max_bytes()`` deletes the oldest files down to 90%
  of it. The bound is per folder (``llvm/`` and ``cuda/`` each), so one backend's entries
  never evict the other's. The folder is listed on a process's first write and then about
  once per 10% of the bound written (~45 ms for a full 256 MiB of ~40 KB entries), not on
  every write; so other processes' writes are seen late, and several writing at once may
  briefly overshoot.

Settings: ``$SYMGRAD_CACHE_DIR`` or ``~/.cache/symgrad``; ``set_cache_dir``,
``disable_disk_cache`` or ``SYMGRAD_NO_DISK_CACHE=1``; at most 256 MiB per folder:
``set_cache_max_bytes`` or ``SYMGRAD_CACHE_MAX_BYTES``. A cache that cannot be written is
skipped, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
DEFAULT_CACHE_MAX_BYTES = 256 * 2**20
_PROVEN = ".ok"  # <name>.ok<suffix>: an entry that loaded fine
_CLAIM = ".loading-"  # <name>.loading-<pid>-<host hash>-<random>: a load in progress
_CLAIM_MAX_AGE = 600.0  # seconds; a load takes milliseconds, so an older claim is an orphan
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]

_lock = threading.Lock()  # guards the settings and _usage
_cache_dir_override: Path | None = None
_disk_enabled = True
_cache_max_bytes: int | None = None  # set_cache_max_bytes; None: the environment or default
_usage: dict[Path, int] = {}  # bytes in each cache folder: last listing plus writes since


# --- the settings -----------------------------------------------------------------------------

def cache_dir() -> Path | None:
    """Where compiled code is cached on disk, or None when the disk cache is off."""
    if not _disk_enabled or os.environ.get("SYMGRAD_NO_DISK_CACHE", "") not in ("", "0"):
        return None
    if _cache_dir_override is not None:
        return _cache_dir_override
    env = os.environ.get("SYMGRAD_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "symgrad"


def set_cache_dir(path: str | os.PathLike | None) -> None:
    """Cache compiled code under ``path`` (and turn the disk cache on); None: the default place.

    >>> set_cache_dir("/tmp/symgrad-cache")
    """
    global _cache_dir_override, _disk_enabled
    with _lock:
        _cache_dir_override = None if path is None else Path(path)
        _disk_enabled = True


def disable_disk_cache() -> None:
    """Stop reading and writing the disk cache (the memory caches stay on)."""
    global _disk_enabled
    with _lock:
        _disk_enabled = False


def enable_disk_cache() -> None:
    """Turn the disk cache back on (``SYMGRAD_NO_DISK_CACHE=1`` still wins)."""
    global _disk_enabled
    with _lock:
        _disk_enabled = True


def cache_max_bytes() -> int:
    """The bound on each folder of the disk cache (``llvm/``, ``cuda/``), in bytes:
    ``set_cache_max_bytes``, else ``$SYMGRAD_CACHE_MAX_BYTES``, else 256 MiB
    (``DEFAULT_CACHE_MAX_BYTES``)."""
    if _cache_max_bytes is not None:
        return _cache_max_bytes
    env = os.environ.get("SYMGRAD_CACHE_MAX_BYTES", "").strip()
    if not env:
        return DEFAULT_CACHE_MAX_BYTES
    return _check_max_bytes(int(env) if env.isdigit() else None, "SYMGRAD_CACHE_MAX_BYTES", env)


def set_cache_max_bytes(max_bytes: int | None) -> None:
    """Bound each folder of the disk cache to ``max_bytes`` (least recently used files go first
    once a write goes over it); None: back to ``$SYMGRAD_CACHE_MAX_BYTES`` or the default.

    >>> set_cache_max_bytes(64 * 2**20)
    """
    global _cache_max_bytes
    checked = None if max_bytes is None else _check_max_bytes(max_bytes, "set_cache_max_bytes")
    with _lock:
        _cache_max_bytes = checked


def _check_max_bytes(value: object, what: str, given: object = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what}: expected a positive whole number of bytes (to turn the disk "
                         f"cache off, SYMGRAD_NO_DISK_CACHE=1), got {given or value!r}")
    return value


# --- one folder of entries --------------------------------------------------------------------

class DiskCache:
    """The entries of one kind of compiled code, in ``cache_dir() / folder``.

    ``file_format`` is the first line of every file (bump it when the layout or the compiler
    changes), ``suffix`` ends every entry's name, ``parts`` names the byte strings an entry
    holds. Names are the caller's keys (a hex digest, say): file-name characters only.
    """

    def __init__(self, folder: str, file_format: str, suffix: str, parts: Sequence[str]):
        self.folder, self.suffix, self.parts = folder, suffix, tuple(parts)
        self.magic = file_format.encode() + b"\n"

    def directory(self) -> Path | None:
        """The folder, or None when the disk cache is off."""
        root = cache_dir()
        return None if root is None else root / self.folder

    def path(self, name: str) -> Path | None:
        """Where ``name``'s new entry is written (a first load renames it to the proven one)."""
        folder = self.directory()
        return None if folder is None else folder / f"{name}{self.suffix}"

    def load(self, name: str, use: Callable[[dict[str, bytes]], T],
             rejects: tuple[type[BaseException], ...] = (ValueError,),
             claim: bool = True) -> T | None:
        """``use(parts)`` on ``name``'s entry; None when it is missing, corrupt, or ``use``
        raised one of ``rejects`` (the entry is then deleted).

        A proven entry (one that loaded fine before) is used directly. A new one is claimed
        first (see the module docstring) and, once ``use`` returned, marked proven. With
        ``claim=False`` (``use`` only reads the parts: nothing that could crash loads them)
        a new entry is used in place and stays new.
        """
        path = self.path(name)
        if path is None:
            return None
        proven = path.with_name(name + _PROVEN + self.suffix)
        found = self._use(proven, use, rejects)
        if found is not None:
            _touch(proven)  # recency, for the eviction
            return found
        if not claim:
            found = self._use(path, use, rejects)
            if found is not None:
                _touch(path)
            return found
        claimed = path.with_name(f"{name}{_CLAIM}{os.getpid()}-{_HOST}-{secrets.token_hex(4)}")
        try:
            os.rename(path, claimed)  # atomic: one process wins the entry, the others compile
        except OSError:
            return None
        _touch(claimed)  # a claim's age counts from now (a rename keeps the entry's mtime)
        found = self._use(claimed, use, rejects)
        if found is not None:
            try:
                os.replace(claimed, proven)  # used without error: "loaded fine"
            except OSError:  # evicted meanwhile: nothing lost but the entry
                pass
        return found

    def _use(self, path: Path, use: Callable[[dict[str, bytes]], T],
             rejects: tuple[type[BaseException], ...]) -> T | None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            return use(self.decode(data))
        except (ValueError, *rejects):  # corrupt or refused: drop it, compile again
            path.unlink(missing_ok=True)
            return None

    def store(self, name: str, parts: Mapping[str, bytes]) -> None:
        """Write ``name``'s entry atomically (a temporary file, then a rename) unless a proven
        one exists, then keep the folder within ``cache_max_bytes()``."""
        path = self.path(name)
        if path is None:
            return
        data = self.encode(parts)
        try:
            if path.with_name(name + _PROVEN + self.suffix).exists():
                return  # another process loaded its copy meanwhile
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            return
        folder, bound = path.parent, cache_max_bytes()
        with _lock:
            used = _usage.get(folder)
            if used is not None and used + len(data) <= bound:
                _usage[folder] = used + len(data)  # others' writes: seen at the next listing
                return
        used = self._evict(folder, bound)  # the first write of this process, or over the bound
        with _lock:
            _usage[folder] = used

    def drop(self, name: str) -> None:
        """Delete ``name``'s new and proven entries (claims in progress are left alone)."""
        path = self.path(name)
        if path is not None:
            for victim in (path, path.with_name(name + _PROVEN + self.suffix)):
                try:
                    victim.unlink(missing_ok=True)
                except OSError:  # a read-only cache
                    pass

    def clear(self) -> None:
        """Delete every file of the folder's entries (new, proven, claimed, half-written)."""
        folder = self.directory()
        if folder is None or not folder.is_dir():
            return
        with _lock:
            _usage.pop(folder, None)
        for path in folder.iterdir():
            if self._is_cache_file(path.name):
                path.unlink(missing_ok=True)

    def encode(self, parts: Mapping[str, bytes]) -> bytes:
        """The file of an entry: the format line, a JSON header line (each part's size, the
        sha256 of the payload), then the parts in order."""
        payload = b"".join(parts[p] for p in self.parts)
        header = {p: len(parts[p]) for p in self.parts}
        header["sha256"] = hashlib.sha256(payload).hexdigest()
        return self.magic + json.dumps(header).encode() + b"\n" + payload

    def decode(self, data: bytes) -> dict[str, bytes]:
        """Inverse of ``encode``; ValueError if anything does not match."""
        if not data.startswith(self.magic):
            raise ValueError(f"not a {self.magic.decode().strip()!r} cache file")
        line, sep, payload = data[len(self.magic):].partition(b"\n")
        try:
            header = json.loads(line)
            sizes = [int(header[p]) for p in self.parts]
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError,
                ValueError) as exc:
            raise ValueError("corrupt cache header") from exc
        if (not sep or len(payload) != sum(sizes) or min(sizes, default=0) < 0
                or hashlib.sha256(payload).hexdigest() != header.get("sha256")):
            raise ValueError("corrupt cache payload")
        parts, start = {}, 0
        for part, size in zip(self.parts, sizes):
            parts[part], start = payload[start:start + size], start + size
        return parts

    def _is_cache_file(self, name: str) -> bool:
        return name.endswith(self.suffix) or name.startswith(".tmp-") or _CLAIM in name

    def _evict(self, folder: Path, bound: int) -> int:
        """Delete orphaned claims and, if the folder holds more than ``bound`` bytes, the least
        recently used files down to 90% of it; return the bytes left."""
        files, now = [], time.time()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return 0
        for entry in entries:
            try:
                if not self._is_cache_file(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                info = entry.stat(follow_symlinks=False)
                if _CLAIM in entry.name and _orphaned(entry.name, info.st_mtime, now):
                    os.unlink(entry.path)
                    continue
            except OSError:  # deleted meanwhile by another process
                continue
            files.append((info.st_mtime_ns, entry.name, info.st_size))
        used = sum(size for *_, size in files)
        if used > bound:
            for _, name, size in sorted(files):  # oldest first
                if used <= bound * 9 // 10:
                    break
                try:
                    os.unlink(folder / name)
                except FileNotFoundError:  # another process evicted it first
                    pass
                except OSError:
                    continue
                used -= size
        return used


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # gone (evicted by another process) or a read-only cache
        pass


def _orphaned(name: str, mtime: float, now: float) -> bool:
    """Whether a claim's loader is gone: its process died (perhaps crashing on the entry),
    or the claim is older than any load takes (the only test for another host's claims)."""
    if now - mtime > _CLAIM_MAX_AGE:
        return True
    pid, _, rest = name.partition(_CLAIM)[2].partition("-")
    if not pid.isdigit() or not rest.startswith(_HOST + "-") or os.name == "nt":
        return False  # (on Windows, os.kill(pid, 0) would send CTRL_C_EVENT)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, another user's process
        return False
    return False
