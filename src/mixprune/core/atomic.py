"""Atomic file writes: write to a temporary file in the same directory, then rename over the target.

A reader (or a crash) never sees a half-written file: the target is either the old file or the new one.

    write_text_atomic(path, text); write_bytes_atomic(path, data)
    with atomic_path(path) as tmp: some_library.save(obj, tmp)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError


def ensure_dir(path: Path) -> Path:
    """Create a directory (and parents), turning OS failures into a one-line OutputError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {path}: {exc.strerror or exc}; "
                          "choose another location with --out") from None
    return path


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside target; on success it is renamed to target, on failure removed."""
    target = Path(target)
    ensure_dir(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write to {target.parent}: {exc.strerror or exc}; "
                          "choose another location with --out") from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def exclusive_dir(path: Path) -> Iterator[Path]:
    """Hold an exclusive lock on directory `path` (a `.lock` file in it, fcntl.flock) for the block:
    a second process that wants the same output directory fails at once instead of mixing files."""
    import fcntl

    ensure_dir(path)
    try:
        handle = open(path / ".lock", "a+")
    except OSError as exc:
        raise OutputError(f"cannot write to {path}: {exc.strerror or exc}; choose another location with --out") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another mixprune process is writing to {path}; wait for it to finish or choose "
                              "another --out") from None
        yield path
    finally:
        handle.close()  # closing releases the lock; the empty .lock file stays, harmlessly


def swap_dirs(new: Path, target: Path) -> None:
    """Put directory `new` in place of `target` and remove what was there: one atomic exchange of the two
    names (Linux renameat2 RENAME_EXCHANGE) where the file system allows it, else two renames; `target`
    never holds a mix of both."""
    import ctypes
    import shutil

    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        exchanged = libc.renameat2(at_fdcwd, os.fsencode(new), at_fdcwd, os.fsencode(target), rename_exchange) == 0
        if exchanged:
            os.rename(new, old)  # `new` now names the old run
        else:
            os.rename(target, old)
            os.rename(new, target)
    except (OSError, AttributeError) as exc:
        raise OutputError(f"cannot replace {target} with the new run in {new}: {exc}; the new run is complete in "
                          f"{new}") from None
    shutil.rmtree(old, ignore_errors=True)


class TooLarge(ValueError):
    """A file read as text holds more than its kind of file ever does."""


def read_text_capped(path: Path, limit: int) -> str:
    """A UTF-8 text file of at most `limit` bytes, read without ever holding more than limit + 1 bytes
    (a symlink to /dev/zero, a huge file, ...): TooLarge beyond that; OSError and UnicodeDecodeError as usual."""
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{path} holds more than {limit:,} bytes")
    return data.decode("utf-8")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text_atomic(target: Path, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))
