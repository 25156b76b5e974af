"""User-facing errors: every mistake in a spec is an ArchcError with a location."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    """The text of one spec file, kept so that errors can quote a line.

    Args:
        path: how the file is shown in messages (as the user named it).
        text: the file's contents.
    """

    path: str
    text: str = field(repr=False)
    _lines: list[str] = field(default_factory=list, compare=False, repr=False)

    def line(self, lineno: int) -> str:
        """Return line `lineno` (1-based) without its newline, or "" if out of range."""
        if not self._lines:
            self._lines.extend(self.text.splitlines())
        if 1 <= lineno <= len(self._lines):
            return self._lines[lineno - 1]
        return ""


@dataclass(frozen=True)
class Loc:
    """A position in a spec: file, 1-based line and column, and a span width."""

    source: Source
    line: int
    col: int
    width: int = 1

    def __str__(self) -> str:
        return f"{self.source.path}:{self.line}:{self.col}"

    def __repr__(self) -> str:
        return f"Loc({self})"


class ArchcError(Exception):
    """An error the user can fix; printed with its location, source line and hint.

    Args:
        message: what is wrong, one sentence.
        loc: where; None only for errors that concern no spec text (a missing file).
        hint: what to do about it.
        notes: extra lines, e.g. the chain of block calls that led here.
    """

    kind = "error"

    def __init__(
        self,
        message: str,
        loc: Loc | None = None,
        hint: str | None = None,
        notes: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.hint = hint
        self.notes = list(notes)

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        """Format as `file:line:col: error: message`, the source line, a caret and the hint."""
        head = f"{self.loc}: " if self.loc else ""
        out = [f"{head}{self.kind}: {self.message}"]
        if self.loc is not None:
            text = self.loc.source.line(self.loc.line)
            if text:
                gutter = f"{self.loc.line:>5} | "
                out.append(gutter + text.rstrip("\n"))
                # keep tabs so the caret lines up under tab-indented source
                pad = "".join(c if c == "\t" else " " for c in text[: self.loc.col - 1])
                width = max(1, min(self.loc.width, max(1, len(text) - self.loc.col + 1)))
                out.append(" " * (len(gutter) - 2) + "| " + pad + "^" * width)
        for note in self.notes:
            out.append(f"note: {note}")
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)


class ArchcWarning(ArchcError, UserWarning):
    """Something harmless but probably unintended in a spec (an unread named value); printed, not raised."""

    kind = "warning"


class SpecSyntaxError(ArchcError):
    """The spec text does not follow the grammar."""


class UnknownNameError(ArchcError):
    """An unknown block, layer, parameter or variable name."""


class ArgumentError(ArchcError):
    """A value of the wrong type, or a missing/duplicate argument."""


class UseError(ArchcError):
    """A `use` that names no file, or an import cycle."""


class ShapeError(ArchcError):
    """Shapes that do not fit: an add of different shapes, a vanishing feature map."""


class LimitError(ArchcError):
    """A spec that would expand past the compiler's size bounds."""


class WeightsError(ArchcError):
    """A checkpoint that cannot be loaded into the compiled module."""


class BackendError(ArchcError):
    """An unknown or broken backend plugin."""


class DataError(ArchcError):
    """A data set that cannot be read or does not fit the network (names the file)."""


class CheckpointError(ArchcError):
    """A training checkpoint or run directory that cannot be read, written or resumed."""


class TrainError(ArchcError):
    """A training or evaluation setting that cannot work (recipe, schedule, processes)."""


def _edits(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) that turn `a` into `b`."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate genuinely close to `name`, or None.

    Close means, ignoring case: at most one edit per three characters of `name` (at least one),
    and difflib's similarity ratio at least 0.6, so a one-letter slip in a short word counts but
    `concat` is not taken for `conv` (three edits in six characters). Ties go to the candidate
    with the higher ratio, then to the first in sorted order, so the answer is deterministic.

    Args:
        name: what the user wrote.
        candidates: the names that exist.

    Returns:
        The closest candidate, or None when none is close.
    """
    key = name.lower()
    budget = max(1, len(key) // 3)
    best: tuple[int, float, str] | None = None
    for cand in sorted(set(candidates)):
        low = cand.lower()
        if abs(len(low) - len(key)) > budget:
            continue  # cheap: at least that many inserts or deletes
        edits = _edits(key, low)
        ratio = difflib.SequenceMatcher(None, key, low).ratio()
        if edits > budget or ratio < 0.6:
            continue
        if best is None or (edits, -ratio) < (best[0], -best[1]):
            best = (edits, ratio, cand)
    return None if best is None else best[2]


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """Return "did you mean 'x'?" for the candidate genuinely close to `name` (see `closest`), or None."""
    close = closest(name, candidates)
    return f"did you mean '{close}'?" if close else None


class RecursiveBlockError(ArchcError):
    """A block that calls itself, directly or through other blocks."""


class OutputError(ArchcError):
    """A file or directory that cannot be written (no permission, not a directory, disk full)."""


def print_warnings_plainly() -> None:
    """Show ArchcWarnings as the CLI shows errors (location, source line, caret, hint), once each.

    Other warnings keep Python's format.
    """
    import warnings

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if isinstance(message, ArchcWarning):
            print(message.render(), file=file or sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
