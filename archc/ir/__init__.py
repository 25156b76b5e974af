"""The graph IR: Graph, Node and the op specs (shape, params, multiply-adds), and a reference interpreter."""

from archc.ir import fused  # noqa: F401  (registers the fused ops)
from archc.ir.graph import Graph, LintError, Node
from archc.ir.interpreter import Interpreter
from archc.ir.ops import LAYERS, OPS, OpProblem, OpSpec

__all__ = ["Graph", "Interpreter", "LintError", "Node", "LAYERS", "OPS", "OpProblem", "OpSpec"]
