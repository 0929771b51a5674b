"""Safe files: atomic durable writes, validated pickle-free ``.npz`` and JSON, checksums.

Writes (:func:`atomic_write`, :func:`save_npz`, :func:`save_json`): the content
goes to a uniquely named temporary file in the destination folder (created with
mode 0666 less the process's umask, like any file the user creates), is flushed
to disk (``fsync``), moved into place with ``os.replace``, and the folder is
synced too: an interrupted or crashed run never leaves a half-written file where
a complete one is expected, and a power loss does not reorder the two.

Folders are written the same way (:func:`temp_dir` next to the destination, then
:func:`replace_dir`); temporary names say which host and process made them, so
that :func:`clean_stale` can remove those of processes that died (``kill -9``)
without touching those of live writers.

Reads (:func:`load_npz`, :func:`load_json`) raise a ``ValueError`` that names the
file for anything that is not a well-formed file of that kind (a truncated zip,
an array header that asks for more bytes than the file holds, pickled objects).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import secrets
import shutil
import socket
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = [
    "atomic_write", "save_npz", "load_npz", "save_json", "load_json", "sha256_file", "temp_name", "temp_dir",
    "replace_dir", "clean_stale", "check_writable", "fsync_path", "read_npy_header",
]

#: temporary entries of processes on other hosts (or whose liveness cannot be told) older than this are stale
STALE_AFTER_S = 24 * 3600


def temp_name(name: str) -> str:
    """``.NAME.HOST.PID.RANDOM.tmp``: a unique temporary name that says who made it (see :func:`clean_stale`)."""
    host = socket.gethostname().replace(".", "_") or "host"
    return f".{name}.{host}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's data to disk (folders: where the OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # (a folder on Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, sync it, and move ``tmp_path`` onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / temp_name(path.name)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # (mode 0666 less the umask)
    try:
        write(str(tmp))
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)
    return path


def temp_dir(parent: str | os.PathLike, name: str) -> Path:
    """A new empty folder in ``parent`` with a :func:`temp_name` (mode 0777 less the umask)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / temp_name(name)
    os.mkdir(path, 0o777)
    return path


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def replace_dir(work: str | os.PathLike, final: str | os.PathLike) -> None:
    """Put the folder ``work`` (fully written and synced) in place of ``final``, which may exist.

    Where ``final`` exists, the two are swapped atomically (Linux), so that ``final`` is at every
    moment either the old folder or the new one; elsewhere the old one is first moved aside (a
    short moment without ``final``). The old folder is then deleted.
    """
    work, final = Path(work), Path(final)
    for file in work.iterdir():
        fsync_path(file)
    fsync_path(work)
    try:
        os.rename(work, final)  # (fails when final exists: a folder is not replaced by rename)
    except OSError:
        if not final.exists():
            raise
        if _exchange(work, final):
            old = work
        else:
            old = final.parent / temp_name(final.name + ".old")
            os.rename(final, old)
            os.rename(work, final)
        shutil.rmtree(old, ignore_errors=True)
    fsync_path(final.parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary entries (:func:`temp_name`) in ``folder`` left by processes that died:
    those of this host whose process is gone, and any older than :data:`STALE_AFTER_S`."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    host = socket.gethostname().replace(".", "_") or "host"
    now = time.time()
    for entry in folder.iterdir():
        parts = entry.name.split(".")
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp") and len(parts) >= 6):
            continue
        who, pid = parts[-4], parts[-3]
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        dead = who == host and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))
        if dead or age > STALE_AFTER_S:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                try:
                    entry.unlink()
                except OSError:
                    continue
            removed.append(entry)
    return removed


def check_writable(folder: str | os.PathLike, what: str) -> Path:
    """Create ``folder`` if needed and check that files can be written there, before any long work.

    Raises
    ------
    PermissionError, OSError
        Naming ``what`` (e.g. "cache_dir") and the folder.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / temp_name("probe")
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        os.unlink(probe)
    except PermissionError as err:
        raise PermissionError(f"{what} {os.fspath(folder)!r} is not writable ({err.strerror}); choose a folder you "
                              f"can write to") from None
    except OSError as err:
        raise OSError(f"{what} {os.fspath(folder)!r} cannot be used ({err.strerror or err}); choose a folder you "
                      f"can write to") from None
    return folder


def save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Atomically save numpy arrays (no objects) to ``path`` (a ``.npz`` file)."""
    clean = {}
    for name, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"array {name!r} has dtype object; only plain numeric/str arrays can be saved")
        clean[name] = arr

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **clean)

    return atomic_write(path, write)


def read_npy_header(f: Any, what: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Read a ``.npy`` header from the open file ``f``: ``(shape, fortran_order, dtype, nbytes)``,
    refusing object dtypes and malformed headers (``ValueError`` naming ``what``)."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise ValueError(f"{what}: not a readable .npy array ({err})") from None
    if dtype.hasobject:
        raise ValueError(f"{what}: holds Python objects (dtype {dtype}); refusing to unpickle")
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"{what}: bad array shape {shape!r}")
    return tuple(shape), bool(fortran), dtype, int(np.prod(shape, dtype=object)) * dtype.itemsize


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of a ``.npz`` file, refusing pickled objects and headers that claim more data
    than the file holds (``ValueError`` naming the file for anything malformed; ``FileNotFoundError``
    when it is missing)."""
    path = os.fspath(path)
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-4]
                with z.open(info) as f:
                    shape, fortran, dtype, nbytes = read_npy_header(f, f"{path} (array {name!r})")
                    if nbytes > info.file_size:
                        raise ValueError(f"{path}: array {name!r} claims {shape} {dtype} ({nbytes} bytes) but its "
                                         f"entry holds {info.file_size} bytes")
                    data = f.read(nbytes)
                if len(data) != nbytes:
                    raise ValueError(f"{path}: array {name!r} is truncated ({len(data)} of {nbytes} bytes)")
                arr = np.frombuffer(data, dtype=dtype)
                out[name] = (arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)).copy()
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as err:
        raise ValueError(f"{path} is not a readable .npz file ({type(err).__name__}: {err})") from None
    return out


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")

    return atomic_write(path, write)


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file (``ValueError`` naming the file when it is not valid JSON)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{os.fspath(path)} is not valid JSON ({err})") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
