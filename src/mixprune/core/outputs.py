"""The one rule for every command that writes a directory of results (reproduce, sweep, search, sensitivity,
report): check every input first and create nothing before; then claim the directory (create it, lock it);
refuse contents that are not this command's run of the same settings; go on with (resume) a run of the same
settings; replace a directory whole only when asked (--overwrite), writing the new one beside it and swapping
it in once it is complete.

    check_location(Path("runs/x"), "--out")          # before anything is created: a path the system takes
    with claimed(root, kind="sweep", same=same_sweep, overwrite=False) as where:
        ...write into `where`...                      # root itself, or the fresh directory that replaces it
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .atomic import ensure_dir
from .errors import OutputError

Same = Callable[[Path], "bool | None"]  # does root hold this command's run of the same settings (True), another
# run of this command (False), or nothing of this command's (None)?


@contextlib.contextmanager
def exclusive_dir(path: Path) -> Iterator[Path]:
    """Hold an exclusive lock on directory `path` (a `.lock` file in it, fcntl.flock) for the block:
    a second process that wants the same output directory fails at once instead of mixing files. A lock file this
    call made is removed again where the block fails (a directory refused as someone else's keeps nothing of ours)."""
    import fcntl

    ensure_dir(path)
    made = not (path / ".lock").exists()
    try:
        handle = open(path / ".lock", "a+")
    except OSError as exc:
        raise OutputError(f"cannot write to {path}: {exc.strerror or exc}; choose a location you can write to") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another mixprune process is writing to {path}; wait for it to finish, or write "
                              "elsewhere") from None
        try:
            yield path
        except BaseException:
            if made:
                with contextlib.suppress(OSError):
                    os.unlink(path / ".lock")
            raise
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


def check_location(path: Path, flag: str) -> None:
    """OutputError (one line) for an output location this machine will not take, found before anything is created:
    a name the file system refuses (too long), a file where a directory must be, or a directory not writable by
    this user (the nearest existing one, where the path does not exist yet)."""
    path = Path(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise OutputError(f"{flag} {path}: {exc.strerror or exc}; choose another location") from None
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise OutputError(f"{flag} {path}: {existing} is a file, not a directory; choose another location")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: {existing} is not writable by this user; choose another location")


@contextlib.contextmanager
def claimed(root: Path, what: str, same: Same, overwrite: bool) -> Iterator[Path]:
    """Claim `root` for a run of `what` (e.g. "sweep"): yield where to write: root itself when it is empty or holds
    this command's run of the same settings (which goes on where it stopped), or with `overwrite` a fresh
    directory beside root that replaces it whole once the block completes (the old contents stay until then).
    OutputError for a root that holds anything else; a second process that claims root while this one writes
    fails at once (exclusive_dir)."""
    root = Path(root)
    with exclusive_dir(root):
        held = sorted(p.name for p in root.iterdir() if p.name != ".lock")
        verdict = same(root) if held else True
        if verdict:
            yield root
            return
        if not overwrite:
            kind = f"another {what} (its settings differ)" if verdict is False else \
                f"other files ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''})"
            raise OutputError(f"--out {root} already holds {kind}; choose a new --out, or pass --overwrite to replace "
                              "it (the old contents stay until the new run completes)")
        fresh = Path(tempfile.mkdtemp(prefix=f".{root.name}.new-", dir=root.parent))
        with exclusive_dir(fresh):
            yield fresh
        swap_dirs(fresh, root)
