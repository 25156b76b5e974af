"""The .arch frontend: grammar, typed AST, loading of `use`d files, and elaboration to IR."""

from archc.frontend.elaborate import MAX_NODES, elaborate
from archc.frontend.loader import Program, load
from archc.frontend.parser import parse

__all__ = ["MAX_NODES", "Program", "elaborate", "load", "parse"]
