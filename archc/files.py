"""Writing files: atomically where the target is a plain file, and every OSError as an ArchcError naming the path.

Every command that writes (`-o`, `--runs`, checkpoints) goes through `write_output` / `make_dir` / `writing`,
so a full disk, a read-only directory or a file where a directory should be is a located exit-2 error
instead of a traceback, and a failed write leaves no half-written file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from archc.errors import OutputError

# `.NAME.XXXXXXXX.tmp`: the temp files atomic_write claims (8 hex digits)
_TEMP = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere",
    errno.EACCES: "no permission to write there: choose a writable place",
    errno.EPERM: "no permission to write there: choose a writable place",
    errno.EROFS: "the file system is read-only: choose a writable place",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EEXIST: "a file is in the way of a directory: choose another path",
    errno.EISDIR: "that is a directory: give a file name",
    errno.ENAMETOOLONG: "use a shorter path",
}


@contextlib.contextmanager
def writing(path: str | os.PathLike, what: str = "output") -> Iterator[None]:
    """Turn an OSError raised inside the block into an OutputError that names `path`.

    Args:
        path: what is being written (named in the message).
        what: how to call it, e.g. "run directory" or "checkpoint".

    Raises:
        OutputError: the block raised an OSError.
    """
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
        raise OutputError(
            f"cannot write {what} {path}: {reason}{where}",
            hint=_HINTS.get(exc.errno or 0, "check the path and its permissions"),
        ) from None


def make_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create `path` and its parents (nothing if it exists as a directory).

    Raises:
        OutputError: it cannot be created (no permission, a file in the way, disk full).
    """
    path = Path(path)
    with writing(path, what):
        path.mkdir(parents=True, exist_ok=True)
    return path


def write_output(path: str | os.PathLike, write: Callable[[Path], None], what: str = "output") -> Path:
    """Write `path` with `write(target)`: atomically for a plain file, in place for a device or pipe.

    A plain file (new or existing) is written through atomic_write, so an error leaves the old file or
    none; `/dev/stdout`, a FIFO or another non-regular target is written directly (renaming onto it
    would replace the device).

    Args:
        path: the file to write; its directory is created if needed.
        write: fills the file it is given (a temp file beside `path`, or `path` itself); it must write
            into that file, not rename another onto it.
        what: how to call the file in an error message.

    Returns:
        `path`.

    Raises:
        OutputError: any OSError while writing, with a hint for the errno.
    """
    path = Path(path)
    with writing(path, what):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            mode = None
        except NotADirectoryError:
            mode = None  # atomic_write's mkdir reports it
        if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            write(path)
        else:
            atomic_write(path, write)
    return path


def save_safetensors(
    path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None, what: str = "weights"
) -> Path:
    """Write `tensors` as a .safetensors file through write_output (atomic, the umask's mode, OutputError).

    Args:
        path: the file.
        tensors: name -> contiguous CPU tensor (no two sharing memory).
        metadata: the header's str -> str metadata.
        what: how to call the file in an error message.

    Returns:
        `path`.

    Raises:
        OutputError: the file cannot be written.
    """
    path = Path(path)

    def write(target: Path) -> None:
        from safetensors.torch import save, save_file

        if target == path:
            # a device or pipe: save_file would rename its own temp file onto it, so write the bytes
            with open(target, "wb") as f:
                f.write(save(tensors, metadata=metadata))
            return
        try:
            save_file(tensors, str(target), metadata=metadata)
        except Exception as exc:  # safetensors reports I/O errors as SafetensorError("... (os error N) ...")
            code = re.search(r"\(os error (\d+)\)", str(exc))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None

    return write_output(path, write, what)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write a file so that a crash leaves the old file or the new one, never a torn one.

    `write(tmp)` fills a temp file in the same directory (so the rename cannot cross file systems); the
    temp file is fsynced, renamed onto `path`, and the directory is fsynced so the rename itself survives
    a power loss. On any error the temp file is removed and `path` is left as it was.

    Args:
        path: the file to (re)place; its directory is created if needed.
        write: fills the temp file it is given.

    Raises:
        Exception: whatever `write` or the file system raised; `path` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _claim_temp(path)
    try:
        mode = stat.S_IMODE(os.stat(tmp).st_mode)
        write(tmp)
        # writers that replace the file themselves (safetensors does) leave it 0600: restore the umask's mode
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_temps(directory: str | os.PathLike) -> list[Path]:
    """Delete the temp files a killed atomic_write left in `directory` (call only while no writer runs).

    Returns:
        The removed files.
    """
    removed = []
    with contextlib.suppress(OSError):
        for p in Path(directory).iterdir():
            if _TEMP.match(p.name) and p.is_file():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def _claim_temp(path: Path) -> Path:
    """Create an empty, unused `.NAME.XXXXXXXX.tmp` beside `path`.

    Unlike tempfile.mkstemp (always 0600) the file gets the permissions a plain open() would give, so the
    checkpoint is as readable as any other file the run writes.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def _fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


__all__ = ["atomic_write", "make_dir", "remove_temps", "save_safetensors", "write_output", "writing"]
