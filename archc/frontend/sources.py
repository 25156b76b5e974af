"""Open a spec file safely: a regular `.arch` file, bounded in size, UTF-8 text.

Every spec file archc reads, the one named on the command line or to `archc.compile` and
each one a `use` names, goes through `read_spec`, so that a spec cannot make archc read
(and quote back in an error) a file that is no spec, such as /etc/passwd or
/proc/self/environ, nor hang on a FIFO or run out of memory on /dev/zero.
"""

from __future__ import annotations

import os
import stat

from archc.errors import ArchcError, Loc, UseError
from archc.frontend import limits

SUFFIX = ".arch"


def _refuse(shown: str, why: str, loc: Loc | None, hint: str | None = None) -> ArchcError:
    cls = UseError if loc is not None else ArchcError
    return cls(f"cannot read '{shown}': {why}", loc, hint=hint)


def check_size(nbytes: int, shown: str, loc: Loc | None = None) -> None:
    """Refuse spec text longer than the spec size limit (ARCHC_MAX_SPEC_BYTES).

    Raises:
        LimitError: `nbytes` is past the limit.
    """
    limit = limits.current().spec_bytes
    if nbytes > limit:
        raise limits.refuse(
            f"spec '{shown}' is",
            nbytes,
            limit,
            "bytes",
            limits.ENV_SPEC_BYTES,
            loc,
            "a spec is a few kilobytes; a file this large is generated or not a spec",
        )


def read_spec(path: str | os.PathLike, shown: str, loc: Loc | None = None) -> str:
    """Read the spec file at `path`, refusing anything that is not a regular `.arch` file of bounded size.

    The content of a file that is refused is never quoted: it may be anything.

    Args:
        path: the file to read.
        shown: how to name it in messages (as the user wrote it).
        loc: the `use` that names it; None for the top-level spec.

    Returns:
        The file's text.

    Raises:
        UseError: (with `loc`) the `use`d file is missing, not a regular `.arch` file, or not UTF-8 text.
        ArchcError: the same for the top-level spec.
        LimitError: the file is larger than ARCHC_MAX_SPEC_BYTES.
    """
    path = os.fspath(path)
    if "\0" in path:  # the OS refuses such paths with a ValueError, not an OSError
        raise _refuse(shown, "a path cannot contain a NUL character", loc)
    if not path.endswith(SUFFIX):
        raise _refuse(
            shown,
            f"it is not a {SUFFIX} file",
            loc,
            hint=f"archc reads only spec files, named *{SUFFIX}",
        )
    try:
        info = os.stat(path)  # before opening: opening a FIFO or a device may block or act
    except FileNotFoundError:
        if loc is None:
            raise ArchcError(f"spec file not found: {shown}", hint="check the path") from None
        raise UseError(
            f"cannot find '{shown}'",
            loc,
            hint="`use` paths are relative to the file that contains them, then to the installed catalogue",
        ) from None
    except OSError as exc:
        raise _refuse(shown, exc.strerror or type(exc).__name__, loc) from None
    except UnicodeEncodeError:  # a lone surrogate that no file name on this system can hold
        raise _refuse(shown, "the path cannot be encoded as a file name", loc) from None
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(shown, "it is not a regular file", loc, hint=f"name a {SUFFIX} spec file")
    if not os.path.realpath(path).endswith(SUFFIX):
        raise _refuse(shown, f"it links to a file not named *{SUFFIX}", loc, hint=f"name a {SUFFIX} spec file")
    check_size(info.st_size, shown, loc)
    limit = limits.current().spec_bytes
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced since the stat above
                raise _refuse(shown, "it is not a regular file", loc)
            # st_size can be 0 for files that hold data (/proc): read at most one byte past the limit
            data = f.read(limit + 1)
    except OSError as exc:
        raise _refuse(shown, exc.strerror or type(exc).__name__, loc) from None
    check_size(len(data), shown, loc)
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise _refuse(shown, f"it holds a NUL byte (line {line}), so it is not a text file", loc)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _refuse(
            shown, f"it is not UTF-8 text (an invalid byte on line {line})", loc, hint="save the spec as UTF-8"
        ) from None
