"""Typed AST of the .arch language: one class per grammar rule, each with its location."""

from __future__ import annotations

from dataclasses import dataclass, field

from archc.errors import Loc

# --- expressions -----------------------------------------------------------


@dataclass(frozen=True)
class Int:
    value: int
    loc: Loc


@dataclass(frozen=True)
class Float:
    value: float
    loc: Loc


@dataclass(frozen=True)
class Bool:
    value: bool
    loc: Loc


@dataclass(frozen=True)
class Dims:
    """The paper's `3x3` / `3x224x224` shorthand."""

    value: tuple[int, ...]
    loc: Loc


@dataclass(frozen=True)
class Name:
    """A variable, or a symbol such as `B` or `none` when no variable has that name."""

    id: str
    loc: Loc


@dataclass(frozen=True)
class Neg:
    operand: Expr
    loc: Loc


@dataclass(frozen=True)
class Not:
    operand: Expr
    loc: Loc


@dataclass(frozen=True)
class BinOp:
    """`+ - * // %` on integers (and `+ - *` on floats)."""

    op: str
    left: Expr
    right: Expr
    loc: Loc


@dataclass(frozen=True)
class Compare:
    op: str
    left: Expr
    right: Expr
    loc: Loc


@dataclass(frozen=True)
class BoolOp:
    """`and` / `or`, short-circuiting."""

    op: str
    left: Expr
    right: Expr
    loc: Loc


@dataclass(frozen=True)
class Cond:
    """`a if test else b`."""

    test: Expr
    then: Expr
    orelse: Expr
    loc: Loc


@dataclass(frozen=True)
class Func:
    """A builtin function call inside an expression: `min(a, b)`, `max(a, b)`."""

    name: str
    args: tuple[Expr, ...]
    loc: Loc


Expr = Int | Float | Bool | Dims | Name | Neg | Not | BinOp | Compare | BoolOp | Cond | Func


@dataclass(frozen=True)
class Template:
    """A name computed from expressions: `"denselayer{i + 1}"` is ("denselayer", BinOp(i + 1))."""

    parts: tuple[str | Expr, ...]
    loc: Loc


# --- arguments ---------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One call argument: positional (`64`), stride shorthand (`/2`) or keyword (`bias=true`)."""

    value: Expr
    loc: Loc
    keyword: str | None = None
    stride: bool = False


# --- statements --------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """A layer or block applied to the current tensor: `conv(3x3, 64, /2)`, `bn`, `add { ... }`.

    `branches` are the bodies in braces after the call: an op with branch inputs (like `add`)
    takes the current tensor plus the result of each, every branch starting from the scope's input.
    """

    name: str
    args: tuple[Arg, ...]
    loc: Loc
    label: str | Template | None = None
    label_loc: Loc | None = field(default=None, compare=False, repr=False)
    branches: tuple[tuple[Stmt, ...], ...] = ()


@dataclass(frozen=True)
class Repeat:
    """`repeat N as i named "layer{i}" { ... }`: N copies of the body, scopes named 0..N-1 or by `named`."""

    count: Expr
    var: str | None
    body: tuple[Stmt, ...]
    loc: Loc
    label: str | Template | None = None
    label_loc: Loc | None = field(default=None, compare=False, repr=False)
    named: Template | None = None


@dataclass(frozen=True)
class Group:
    """`features: { ... }`: statements under one more level of module names, like an inline block."""

    body: tuple[Stmt, ...]
    loc: Loc
    label: str | Template | None = None
    label_loc: Loc | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Bind:
    """`-> lateral`: name the current value so that `from lateral` can continue from it later."""

    name: str
    loc: Loc


@dataclass(frozen=True)
class From:
    """`from lateral`: make a named value the current one."""

    name: str
    loc: Loc


@dataclass(frozen=True)
class If:
    """`if c { } elif c { } else { }`: each branch is (test, body); else has test None."""

    branches: tuple[tuple[Expr | None, tuple[Stmt, ...]], ...]
    loc: Loc


@dataclass(frozen=True)
class Input:
    """`input 3x224x224`: the net's input shape (channels x height x width)."""

    shape: Expr
    loc: Loc


@dataclass(frozen=True)
class Output:
    """`output res4`: name the current value as one of the net's outputs."""

    name: str | Template
    loc: Loc
    name_loc: Loc


@dataclass(frozen=True)
class Cut:
    """`cut 14x14`: split the net here into a trunk and a head whose input is C x 14 x 14 (per RoI)."""

    size: Expr
    loc: Loc


Stmt = Call | Repeat | Group | If | Input | Output | Cut | Bind | From

# --- top level ---------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    default: Expr | None
    loc: Loc


@dataclass(frozen=True)
class Block:
    """`block name(params) { body }`: a reusable, parameterised piece of network."""

    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    loc: Loc
    # names written as labels anywhere in the body; auto-names avoid them
    labels: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Net:
    """`net name(params) { body }`: a network; its params are what `--set` changes."""

    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    loc: Loc
    labels: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Use:
    """`use "path.arch"`: import the blocks of another file, relative to this one."""

    path: str
    loc: Loc


@dataclass(frozen=True)
class Module:
    """One parsed file."""

    uses: tuple[Use, ...]
    blocks: tuple[Block, ...]
    nets: tuple[Net, ...]
