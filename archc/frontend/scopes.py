"""Scopes of the elaborator: module names (namespaces) and named values (`-> x`, `from x`).

A namespace is the set of names under one module path (`layer1.0.`); a scope adds the
variables, the value branches start from, and the named values bound with `-> name`.
Every level of module names (a block call, a repeat iteration, a labelled group) is a new
scope for named values that sees those of the scope around it (a block sees only its own);
branches and `if` bodies belong to the scope they are written in.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from archc.errors import ArchcWarning, ArgumentError, Loc, UnknownNameError, did_you_mean
from archc.frontend import ast
from archc.frontend.values import Evaluator, Symbol, Value
from archc.ir.registry import describe

# one part of a module name: what a computed label must evaluate to
_PART = re.compile(r"[A-Za-z0-9_]+")


@dataclass
class Namespace:
    """The names taken under one module path (e.g. `layer1.0.`)."""

    prefix: str
    labels: set[str]
    used: dict[str, Loc | None] = field(default_factory=dict)

    def take(self, label: str | None, op: str, loc: Loc) -> str:
        """Reserve a local name: the label, or `op`, `op_1`, ... avoiding every label."""
        if label is not None:
            if label in self.used:
                first = self.used[label]
                raise UnknownNameError(
                    f"duplicate layer name '{self.prefix}{label}'",
                    loc,
                    notes=[f"first used at {first}"] if first else [],
                    hint="names become module names and must be unique within a block; rename one",
                )
            self.used[label] = loc
            return label
        name, k = op, 0
        while name in self.used or name in self.labels:
            k += 1
            name = f"{op}_{k}"
        self.used[name] = None
        return name


@dataclass
class Binding:
    """A named value: the node it names, where it was bound, whether anything read it."""

    node: str
    loc: Loc
    used: bool = False


@dataclass
class Scope:
    """Where statements are elaborated.

    Attributes:
        ns: the module names of this level.
        env: variables (block parameters, repeat counters, in_channels, ...).
        input: the value branches start from (the tensor `add` adds back): the block's / iteration's input.
        outer: the scope whose named values this one sees (None for a net or a block body).
        values: the named values bound in this scope.
    """

    ns: Namespace
    env: dict[str, Value]
    input: str
    outer: Scope | None = None
    values: dict[str, Binding] = field(default_factory=dict)

    def bind(self, name: str, node: str, loc: Loc) -> None:
        """Name a value; naming one twice in a scope is an error, hiding an outer one a warning.

        Raises:
            ArgumentError: the name is already bound in this scope.
        """
        if name in self.values:
            first = self.values[name]
            raise ArgumentError(
                f"the value '{name}' is named twice",
                loc,
                notes=[f"first named at {first.loc}"],
                hint="give each named value its own name",
            )
        hidden = self.outer.find(name) if self.outer is not None else None
        if hidden is not None:
            warnings.warn(
                ArchcWarning(
                    f"'{name}' hides the value of the same name bound at {hidden.loc}",
                    loc,
                    hint="rename one of them if you meant both",
                ),
                stacklevel=2,
            )
        self.values[name] = Binding(node, loc)

    def find(self, name: str) -> Binding | None:
        """The binding `name` refers to here (this scope, then the ones around it), or None."""
        scope: Scope | None = self
        while scope is not None:
            if name in scope.values:
                return scope.values[name]
            scope = scope.outer
        return None

    def lookup(self, name: str, loc: Loc) -> str:
        """The node a named value refers to; marks it used.

        Raises:
            UnknownNameError: no value of that name is visible here.
        """
        found = self.find(name)
        if found is None:
            visible: list[str] = []
            scope: Scope | None = self
            while scope is not None:
                visible += scope.values
                scope = scope.outer
            raise UnknownNameError(
                f"no value named '{name}' here",
                loc,
                hint=did_you_mean(name, visible)
                or "name a value with `-> name` before reading it with `from name` (a block sees only its own)",
            )
        found.used = True
        return found.node

    def close(self, tally: dict[str, tuple[str, Loc, bool]]) -> None:
        """Record, per `-> name` statement, whether any scope that ran it read the value (see `warn_unread`)."""
        for name, b in self.values.items():
            _, _, read = tally.get(str(b.loc), (name, b.loc, False))
            tally[str(b.loc)] = (name, b.loc, read or b.used)


def warn_unread(tally: dict[str, tuple[str, Loc, bool]]) -> None:
    """Warn about each `-> name` whose value nothing read, in any block call or iteration that ran it."""
    for name, loc, read in tally.values():
        if not read:
            warnings.warn(
                ArchcWarning(f"the value '{name}' is named but never read", loc, hint="remove the `-> name`"),
                stacklevel=2,
            )


def label_text(label: str | ast.Template | None, ev: Evaluator, env: dict[str, Value]) -> str | None:
    """The label as written, or a computed label evaluated: `"denselayer{i + 1}"` -> "denselayer3".

    Raises:
        ArgumentError: a part is not an integer or a name, or the result is not a module name.
    """
    if label is None or isinstance(label, str):
        return label
    out: list[str] = []
    for part in label.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        v = ev.eval(part, env)
        if isinstance(v, bool) or not isinstance(v, (int, Symbol)):
            raise ArgumentError(
                f"a computed name takes integers and names, got {describe(v)}", part.loc, hint='e.g. "layer{i + 1}"'
            )
        out.append(str(v))
    text = "".join(out)
    if not _PART.fullmatch(text):
        raise ArgumentError(
            f"the computed name '{text}' is not a module name (letters, digits and '_')",
            label.loc,
            hint='e.g. "denselayer{i + 1}"',
        )
    return text
