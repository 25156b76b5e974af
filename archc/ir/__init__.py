"""The graph IR: Graph, Node, the op registry (shape, params, multiply-adds, traits) and a reference interpreter."""

from archc.ir import activations, fused, ops_norm, ops_random, ops_resample, ops_tensor  # noqa: F401  (register the ops)
from archc.ir.graph import Graph, LintError, Node
from archc.ir.interpreter import Interpreter
from archc.ir.registry import OPS, OpProblem, OpSpec, infer_node, register, surface_ops, unregister

__all__ = [
    "Graph",
    "Interpreter",
    "LintError",
    "Node",
    "OPS",
    "OpProblem",
    "OpSpec",
    "infer_node",
    "register",
    "surface_ops",
    "unregister",
]
