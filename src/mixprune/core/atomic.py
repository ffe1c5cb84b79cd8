"""Files written atomically, and files read safely.

Writes go to a temporary file in the same directory, then are renamed over the target: a reader (or a crash)
never sees a half-written file, the target is either the old file or the new one. Reads of files a user may
have been given open regular files only (a FIFO, a device or a directory is refused at once, never waited on
or read without end) and hold no more than a stated number of bytes.

    write_text_atomic(path, text); write_bytes_atomic(path, data)
    with atomic_path(path) as tmp: some_library.save(obj, tmp)
    read_capped(path, limit); read_text_capped(path, limit)    # TooLarge beyond limit, OSError for non-files
    with open_regular(path) as fh: ...                        # a regular file's binary stream
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import OutputError


def ensure_dir(path: Path) -> Path:
    """Create a directory (and parents), turning OS failures into a one-line OutputError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {path}: {exc.strerror or exc}; "
                          "choose a location you can write to") from None
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
                          "choose a location you can write to") from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class TooLarge(ValueError):
    """A file holds more than its kind of file ever does."""


def open_regular(path: Path | str) -> BinaryIO:
    """`path` opened for reading in binary, if it is a regular file (after following links); OSError with strerror
    "not a regular file" for a FIFO, a device, a socket or a directory: opened without blocking, so a FIFO with no
    writer is refused at once instead of waited on, and /dev/zero is never read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: Path | str, limit: int) -> bytes:
    """A regular file of at most `limit` bytes, read without ever holding more than limit + 1 bytes: TooLarge
    beyond that; OSError as open_regular says."""
    with open_regular(path) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{path} holds more than {limit:,} bytes")
    return data


def read_text_capped(path: Path | str, limit: int) -> str:
    """A UTF-8 text file of at most `limit` bytes (read_capped); UnicodeDecodeError where it is not UTF-8."""
    return read_capped(path, limit).decode("utf-8")


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
