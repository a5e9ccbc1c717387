"""Atomic file writes: write to a temporary file beside the target, flush it to disk, then
rename it over the target, so an interrupted write never leaves a half-written file and never
destroys what was there.

Only regular files are ever replaced: a device node, FIFO, socket or folder at the target is
refused (a rename would replace ``/dev/full`` itself), and so is a symbolic link, unless the
caller allows writing *through* links (:func:`following_symlinks`; the CLI does so for
``--overwrite``), in which case the file the link points to is replaced and the link kept.
Temporary files left by writes that were killed are removed by the next write of the same
target once they are older than :data:`STALE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: Temporary files of a target older than this are leftovers of a killed write.
STALE_SECONDS = 3600

_FOLLOW = contextvars.ContextVar("invkit_atomic_follow_symlinks", default=False)


@contextlib.contextmanager
def following_symlinks(allow: bool = True) -> Iterator[None]:
    """Within this block, writing to a symbolic link replaces the file it points to."""
    token = _FOLLOW.set(allow)
    try:
        yield
    finally:
        _FOLLOW.reset(token)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return name
    return "special file"


def writable_target(path: str | os.PathLike) -> Path:
    """The regular file a write to ``path`` replaces (``path`` itself, or with
    :func:`following_symlinks`, the file a link points to).

    Raises:
        FileExistsError: ``path`` is a folder, device, FIFO or socket, or a symbolic link while
            links are not followed; the message names it.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if stat.S_ISLNK(st.st_mode):
        if not _FOLLOW.get():
            raise FileExistsError(f"{path}: is a symbolic link; refusing to write through it (pass --overwrite)")
        target = path.resolve()
        if target.exists() and not target.is_file():
            raise FileExistsError(f"{path}: links to {target}, which is not a regular file; refusing to replace it")
        return target
    if not stat.S_ISREG(st.st_mode):
        raise FileExistsError(f"{path}: is a {_kind(st.st_mode)}, not a regular file; refusing to replace it")
    return path


#: Per folder, the leftover temporary files found when it was first written to by this process
#: (scanned once: writing many files into one folder stays linear).
_STALE: dict[str, dict[str, float]] = {}
_TEMP_NAME = re.compile(r"^\.(.+)\.[a-z0-9_]{8}(\.[^.]*)?$")


def _remove_stale(path: Path) -> None:
    folder = str(path.parent.resolve())
    if folder not in _STALE:
        found: dict[str, float] = {}
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if _TEMP_NAME.match(entry.name):
                    with contextlib.suppress(OSError):
                        st = entry.stat(follow_symlinks=False)
                        if stat.S_ISREG(st.st_mode):
                            found[entry.name] = st.st_mtime
        _STALE[folder] = found
    candidates = _STALE[folder]
    if not candidates:
        return
    pattern = re.compile(rf"^\.{re.escape(path.stem)}\.[a-z0-9_]{{8}}{re.escape(path.suffix)}$")
    now = time.time()
    for name in [n for n in candidates if pattern.match(n)]:
        if now - candidates.pop(name) > STALE_SECONDS:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def _fsync(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return  # some platforms cannot open folders; the data itself was synced
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it is flushed to disk (fsync)
    and renamed to ``path``.

    The temporary file keeps ``path``'s suffix so writers that pick a format from the suffix
    (Pillow, safetensors tools) behave the same. See the module docstring for what is refused.
    """
    path = writable_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give the result the permissions a plain
        # open() would have (or keep those of the file it replaces).
        os.chmod(tmp_path, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        _fsync(tmp_path)
        writable_target(path)  # still a regular file (or absent) right before the rename
        os.replace(tmp_path, path)
        _fsync(path.parent, directory=True)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))
