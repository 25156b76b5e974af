"""Parse .arch text into the typed AST (lark LALR; one handler per grammar rule)."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from archc.errors import ArchcError, Loc, Source, SpecSyntaxError
from archc.frontend import ast
from archc.frontend.grammar_cache import cached_lark

_GRAMMAR = Path(__file__).with_name("grammar.lark")

# How terminals are named in "expected ..." hints.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "DIMS": "a shape like 3x3",
    "STRING": "a quoted path",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "SLASH": "'/'",
    "MINUS": "'-'",
    "SEMICOLON": "';'",
    "COMP_OP": "a comparison",
    "SUM_OP": "'+' or '-'",
    "PROD_OP": "'*', '//' or '%'",
}


# the grammar's reserved words: a name spelled like one would be unreachable
KEYWORDS = frozenset("use block net input output cut repeat as named from if elif else and or not true false".split())


# the Lark options besides the LALR parser; expr: the expressions inside computed names ("layer{i + 1}")
LARK_OPTIONS = {"start": ["start", "expr"], "propagate_positions": True, "maybe_placeholders": True}


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    # the LALR tables come from the user's cache when a process has built them before
    return cached_lark(_GRAMMAR.read_text(), **LARK_OPTIONS)


def body_labels(stmts: tuple[ast.Stmt, ...]) -> set[str]:
    """All fixed labels written in a body, at any depth of if and branch nesting (computed ones are not known yet)."""
    out: set[str] = set()
    for s in stmts:
        if isinstance(s, (ast.Call, ast.Repeat, ast.Group)) and isinstance(s.label, str):
            out.add(s.label)
        if isinstance(s, ast.If):
            for _, body in s.branches:
                out |= body_labels(body)
        elif isinstance(s, ast.Call):
            for branch in s.branches:
                out |= body_labels(branch)
    return out


class _ToAst(Transformer):
    """Turn the lark tree into ast objects; methods are named after grammar rules."""

    def __init__(self, source: Source, at: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.source = source
        self.at = at  # (line, column) where the parsed text starts, for an expression inside a string

    def _loc(self, meta_or_tok: Any, width: int = 1) -> Loc:
        line = getattr(meta_or_tok, "line", 1) or 1
        col = getattr(meta_or_tok, "column", 1) or 1
        if isinstance(meta_or_tok, Token):
            width = len(meta_or_tok)
        elif getattr(meta_or_tok, "end_line", None) == line:
            width = max(1, meta_or_tok.end_column - col)
        if self.at is not None:  # an expression inside a string: its text starts at `at`
            line, col = self.at[0], self.at[1] + col - 1
        return Loc(self.source, line, col, width)

    # --- top level
    def start(self, items: list) -> ast.Module:
        return ast.Module(
            uses=tuple(i for i in items if isinstance(i, ast.Use)),
            blocks=tuple(i for i in items if isinstance(i, ast.Block)),
            nets=tuple(i for i in items if isinstance(i, ast.Net)),
        )

    @v_args(meta=True)
    def use(self, meta: Any, children: list) -> ast.Use:
        (tok,) = children
        return ast.Use(str(tok)[1:-1], self._loc(tok))

    @v_args(meta=True)
    def block(self, meta: Any, children: list) -> ast.Block:
        name, params, body = children
        return ast.Block(str(name), tuple(params or ()), body, self._loc(name), frozenset(body_labels(body)))

    @v_args(meta=True)
    def net(self, meta: Any, children: list) -> ast.Net:
        name, params, body = children
        return ast.Net(str(name), tuple(params or ()), body, self._loc(name), frozenset(body_labels(body)))

    def params(self, children: list) -> list:
        return [c for c in children if c is not None]

    def param(self, children: list) -> ast.Param:
        name, default = children
        return ast.Param(str(name), default, self._loc(name))

    def body(self, children: list) -> tuple:
        return tuple(c for c in children if c is not None and not isinstance(c, Token))

    # --- statements
    @v_args(meta=True)
    def labeled(self, meta: Any, children: list) -> ast.Stmt:
        label, stmt = children
        if label is None:
            return stmt
        if isinstance(label, ast.Template):
            return dataclasses.replace(stmt, label=label, label_loc=label.loc)
        return dataclasses.replace(stmt, label=str(label), label_loc=self._loc(label))

    def label(self, children: list) -> Token | ast.Template:
        tok = children[0]
        return self._template(tok) if tok.type == "STRING" else tok

    def _template(self, tok: Token) -> ast.Template:
        """A computed name: the text of `"denselayer{i + 1}"` split into strings and parsed expressions."""
        text = str(tok)[1:-1]
        parts: list[str | ast.Expr] = []
        pos = 0
        while pos < len(text):
            start = text.find("{", pos)
            if start < 0:
                parts.append(text[pos:])
                break
            end = text.find("}", start)
            if end < 0:
                raise SpecSyntaxError(
                    "a '{' in a name has no closing '}'",
                    Loc(self.source, tok.line, tok.column + 1 + start),
                    hint='computed names look like "denselayer{i + 1}"',
                )
            if start > pos:
                parts.append(text[pos:start])
            inner = text[start + 1 : end]
            at = (tok.line, tok.column + 1 + start + 1)
            try:
                tree = _lark().parse(inner, start="expr")
            except UnexpectedInput as exc:
                col = (getattr(exc, "column", None) or 1) + at[1] - 1
                raise SpecSyntaxError(
                    f"cannot read the expression {{{inner}}} in a name",
                    Loc(self.source, at[0], col),
                    hint='computed names look like "denselayer{i + 1}"',
                ) from None
            parts.append(_ToAst(self.source, at).transform(tree))
            pos = end + 1
        if "}" in "".join(p for p in parts if isinstance(p, str)):
            raise SpecSyntaxError("a '}' in a name has no opening '{'", self._loc(tok))
        return ast.Template(tuple(parts), self._loc(tok))

    def call(self, children: list) -> ast.Call:
        name, args, *branches = children
        return ast.Call(str(name), tuple(args or ()), self._loc(name), branches=tuple(branches))

    @v_args(meta=True)
    def repeat(self, meta: Any, children: list) -> ast.Repeat:
        count, var, named, body = children
        return ast.Repeat(
            count,
            None if var is None else str(var),
            body,
            Loc(self.source, meta.line, meta.column, 6),
            named=None if named is None else self._template(named),
        )

    @v_args(meta=True)
    def group(self, meta: Any, children: list) -> ast.Group:
        return ast.Group(children[0], Loc(self.source, meta.line, meta.column, 1))

    @v_args(meta=True)
    def bind(self, meta: Any, children: list) -> ast.Bind:
        return ast.Bind(str(children[0]), self._loc(children[0]))

    @v_args(meta=True)
    def from_(self, meta: Any, children: list) -> ast.From:
        return ast.From(str(children[0]), self._loc(children[0]))

    @v_args(meta=True)
    def if_(self, meta: Any, children: list) -> ast.If:
        test, body, *rest = children
        branches = [(test, body)]
        for r in rest:
            if r is not None:
                branches.append(r)
        return ast.If(tuple(branches), Loc(self.source, meta.line, meta.column, 2))

    def elif_(self, children: list) -> tuple:
        return (children[0], children[1])

    def else_(self, children: list) -> tuple:
        return (None, children[0])

    @v_args(meta=True)
    def input(self, meta: Any, children: list) -> ast.Input:
        return ast.Input(children[0], Loc(self.source, meta.line, meta.column, 5))

    @v_args(meta=True)
    def output(self, meta: Any, children: list) -> ast.Output:
        tok = children[0]
        name = self._template(tok) if tok.type == "STRING" else str(tok)
        return ast.Output(name, Loc(self.source, meta.line, meta.column, 6), self._loc(tok))

    @v_args(meta=True)
    def cut(self, meta: Any, children: list) -> ast.Cut:
        return ast.Cut(children[0], Loc(self.source, meta.line, meta.column, 3))

    # --- arguments
    def args(self, children: list) -> list:
        out = []
        for c in children:
            if c is None:
                continue
            out.append(c if isinstance(c, ast.Arg) else ast.Arg(c, c.loc))
        return out

    @v_args(meta=True)
    def stride(self, meta: Any, children: list) -> ast.Arg:
        return ast.Arg(children[0], self._loc(meta), stride=True)

    def kwarg(self, children: list) -> ast.Arg:
        name, value = children
        return ast.Arg(value, self._loc(name), keyword=str(name))

    # --- expressions
    @v_args(meta=True)
    def cond(self, meta: Any, children: list) -> ast.Cond:
        then, test, orelse = children
        return ast.Cond(test, then, orelse, self._loc(meta))

    @v_args(meta=True)
    def or_(self, meta: Any, children: list) -> ast.BoolOp:
        return ast.BoolOp("or", children[0], children[1], self._loc(meta))

    @v_args(meta=True)
    def and_(self, meta: Any, children: list) -> ast.BoolOp:
        return ast.BoolOp("and", children[0], children[1], self._loc(meta))

    @v_args(meta=True)
    def not_(self, meta: Any, children: list) -> ast.Not:
        return ast.Not(children[0], self._loc(meta))

    @v_args(meta=True)
    def compare(self, meta: Any, children: list) -> ast.Compare:
        left, op, right = children
        return ast.Compare(str(op), left, right, self._loc(meta))

    @v_args(meta=True)
    def binop(self, meta: Any, children: list) -> ast.BinOp:
        left, op, right = children
        return ast.BinOp(str(op), left, right, self._loc(meta))

    @v_args(meta=True)
    def neg(self, meta: Any, children: list) -> ast.Neg:
        return ast.Neg(children[0], self._loc(meta))

    def int_(self, children: list) -> ast.Int:
        return ast.Int(int(children[0]), self._loc(children[0]))

    def float_(self, children: list) -> ast.Float:
        return ast.Float(float(children[0]), self._loc(children[0]))

    def dims(self, children: list) -> ast.Dims:
        tok = children[0]
        return ast.Dims(tuple(int(p) for p in str(tok).split("x")), self._loc(tok))

    @v_args(meta=True)
    def true(self, meta: Any, children: list) -> ast.Bool:
        return ast.Bool(True, self._loc(meta))

    @v_args(meta=True)
    def false(self, meta: Any, children: list) -> ast.Bool:
        return ast.Bool(False, self._loc(meta))

    def name(self, children: list) -> ast.Name:
        return ast.Name(str(children[0]), self._loc(children[0]))

    def func(self, children: list) -> ast.Func:
        name, *args = children
        return ast.Func(str(name), tuple(a for a in args if a is not None), self._loc(name))


def _describe_expected(expected: set[str]) -> str:
    words = sorted({_TERMINAL_WORDS.get(t, f"'{t.lower()}'" if t.isalpha() else t) for t in expected})
    if len(words) > 8:
        words = words[:8] + ["..."]
    return ", ".join(words)


def _syntax_error(exc: UnexpectedInput, source: Source) -> SpecSyntaxError:
    line = getattr(exc, "line", None) or 1
    col = getattr(exc, "column", None) or 1
    if isinstance(exc, UnexpectedCharacters):
        ch = source.line(line)[col - 1 : col] or "?"
        return SpecSyntaxError(
            f"unexpected character {ch!r}",
            Loc(source, line, col),
            hint="names are letters, digits and '_'; comments start with '#'",
        )
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        lines = source.text.splitlines() or [""]
        return SpecSyntaxError(
            "unexpected end of file",
            Loc(source, len(lines), len(lines[-1]) + 1),
            hint=f"expected {_describe_expected(set(exc.expected))}; is a '}}' or ')' missing?",
        )
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    what = f"'{tok}'" if str(tok) else tok.type
    hint = f"expected {_describe_expected(set(exc.expected))}"
    if tok.type == "NAME" and any(t in exc.expected for t in ("COMMA", "RPAR")):
        hint += "; arguments are separated by ','"
    return SpecSyntaxError(f"unexpected {what}", Loc(source, line, col, max(1, len(str(tok)))), hint=hint)


def parse(text: str, path: str = "<spec>") -> ast.Module:
    """Parse one file of .arch text; the same text under the same name is parsed once per process.

    The AST is immutable, so every net that `use`s a block library (and `archc list`, which loads
    them all) shares one parse of it.

    Args:
        text: the spec source.
        path: the name shown in error messages.

    Returns:
        The file's AST.

    Raises:
        SpecSyntaxError: the text does not follow the grammar.
    """
    return _parse(text, path)


@functools.lru_cache(maxsize=64)
def _parse(text: str, path: str) -> ast.Module:
    source = Source(path, text)
    try:
        tree = _lark().parse(text, start="start")
        return _ToAst(source).transform(tree)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, source) from None
    except VisitError as exc:
        if isinstance(exc.orig_exc, ArchcError):
            raise exc.orig_exc from None
        if isinstance(exc.orig_exc, (RecursionError, ValueError)):
            raise SpecSyntaxError(
                "the spec is nested too deeply or has a number too large to read",
                Loc(source, 1, 1),
                hint="simplify the nesting of parentheses and braces",
            ) from None
        raise
    except RecursionError:
        raise SpecSyntaxError(
            "the spec is nested too deeply",
            Loc(source, 1, 1),
            hint="simplify the nesting of parentheses and braces",
        ) from None
