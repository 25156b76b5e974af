"""A reference interpreter of the IR: each node run by plain torch.nn.functional ops.

In the spirit of torch.fx's Interpreter: `run` walks the graph in order and calls
`run_node`, which dispatches to the method named after the node's op. It shares no
code with the backends, so it is an oracle for them: the same graph and the same
state_dict must give the same output as the module a backend lowers.

Parameters are looked up by the torch backend's state_dict keys, `{node.name}.weight`,
`.bias`, `.running_mean`, `.running_var` (a node's module is named after the node):

* conv, linear: weight, and bias when the node has one;
* bn, frozen_bn, bn_act: weight, bias, and the running statistics when tracked;
* fused_conv (eval pipeline): the conv's weight and bias with its BN already folded in;
* layer_norm, group_norm: weight and bias; layer_scale: `{node.name}` itself (a parameter of its scope).

torch is imported inside the methods, so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from archc.errors import BackendError
from archc.ir.fused import epilogue_act
from archc.ir.graph import Graph, Node
from archc.ir.interp_more import MoreOps


class Interpreter(MoreOps):
    """Run a graph on a batch with reference torch ops.

    Args:
        graph: a linted graph (from either pass pipeline, or none).
        params: state_dict-like mapping `"{node.name}.{weight|bias|running_mean|running_var}"` -> tensor,
            as the torch backend's module for the same graph holds.

    Subclass and add a method named after an op to run a new op: `def myop(self, node, inputs)`.
    """

    def __init__(self, graph: Graph, params: Mapping[str, Any]) -> None:
        self.graph = graph
        self.params = params
        self.train = False

    def run(self, x: Any, train: bool = False) -> Any:
        """Run the graph on `x` (N, C, H, W).

        Args:
            x: the input batch.
            train: BN normalises with the batch's statistics (as a module in train()); the
                running statistics in `params` are read, never updated.

        Returns:
            The output tensor; a dict {name: tensor} when the net names several outputs
            (`output` statements), as the generated module returns.

        Raises:
            BackendError: a node whose op has no method here, or a parameter missing from `params`.
        """
        self.train = train
        nodes = self.graph.nodes()
        last_use = {src: i for i, n in enumerate(nodes) for src in n.inputs}
        keep = set(self.graph.outputs)
        env: dict[str, Any] = {}
        for i, node in enumerate(nodes):
            inputs = [x] if node.op == "input" else [env[s] for s in node.inputs]
            env[node.name] = self.run_node(node, inputs)
            for src in node.inputs:  # free what no later node reads, as the generated forward does
                if last_use[src] == i and src not in keep:
                    env.pop(src, None)
        outs = [env[o] for o in self.graph.outputs]
        if self.graph.output_names:
            return dict(zip(self.graph.output_names, outs, strict=True))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run_node(self, node: Node, inputs: list[Any]) -> Any:
        """Run one node on its input values (for the input node: the net's input).

        Raises:
            BackendError: no method for the node's op (naming the op and the spec location).
        """
        method = getattr(type(self), node.op, None)
        if node.op.startswith("_") or node.op in _NOT_OPS or not callable(method):
            raise BackendError(
                f"the IR interpreter has no op '{node.op}' (layer '{node.name}', at {node.loc or 'an unknown place'})",
                hint="run the graph with a backend, or subclass archc.ir.Interpreter with a method of the op's name",
            )
        return method(self, node, inputs)

    # --- parameters ------------------------------------------------------------------------------
    def param(self, node: Node, key: str | None, required: bool = True) -> Any:
        """The tensor `{node.name}.{key}` of params (`{node.name}` for key None); None when absent and not required.

        Raises:
            BackendError: a required tensor is missing.
        """
        name = node.name if key is None else f"{node.name}.{key}"
        value = self.params.get(name)
        if value is None and required:
            raise BackendError(
                f"no parameter '{name}' for layer '{node.name}' ({node.op}, at {node.loc})",
                hint="pass the state_dict of the module lowered from this same graph",
            )
        return value

    def _batch_norm(self, node: Node, x: Any, frozen: bool = False) -> Any:
        import torch.nn.functional as F

        a = node.attrs
        tracked = frozen or a.get("track_running_stats", True)
        mean = self.param(node, "running_mean") if tracked else None
        var = self.param(node, "running_var") if tracked else None
        batch_stats = not tracked or (self.train and not frozen)
        if batch_stats:  # given running statistics, F.batch_norm would update them
            mean = var = None
        return F.batch_norm(
            x, mean, var, self.param(node, "weight"), self.param(node, "bias"), batch_stats, 0.0, a["eps"]
        )

    def _act(self, node: Node, y: Any) -> Any:
        """A fused op's epilogue: its activation's own interpreter method, on the act_<attr> attributes."""
        act, attrs = epilogue_act(node.attrs)
        if act == "none":
            return y
        return getattr(self, act)(Node(f"{node.name}.act", act, (node.name,), attrs, node.shape), [y])

    # --- ops -------------------------------------------------------------------------------------
    def input(self, node: Node, inputs: list[Any]) -> Any:
        return inputs[0]

    def conv(self, node: Node, inputs: list[Any]) -> Any:
        import torch.nn.functional as F

        a = node.attrs
        bias = self.param(node, "bias") if a["bias"] else None
        return F.conv2d(
            inputs[0], self.param(node, "weight"), bias, a["stride"], a["padding"], a["dilation"], a["groups"]
        )

    def fused_conv(self, node: Node, inputs: list[Any]) -> Any:
        y = self.conv(node, inputs[:1])
        if node.attrs["residual"]:
            y = y + inputs[1]
        return self._act(node, y)

    def bn(self, node: Node, inputs: list[Any]) -> Any:
        return self._batch_norm(node, inputs[0])

    def frozen_bn(self, node: Node, inputs: list[Any]) -> Any:
        return self._batch_norm(node, inputs[0], frozen=True)

    def bn_act(self, node: Node, inputs: list[Any]) -> Any:
        y = self._batch_norm(node, inputs[0])
        if node.attrs["residual"]:
            y = y + inputs[1]
        return self._act(node, y)

    def relu(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        return torch.relu(inputs[0])

    def maxpool(self, node: Node, inputs: list[Any]) -> Any:
        import torch.nn.functional as F

        a = node.attrs
        return F.max_pool2d(inputs[0], a["kernel"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])

    def avgpool(self, node: Node, inputs: list[Any]) -> Any:
        import torch.nn.functional as F

        a = node.attrs
        if a["kernel"] is None:  # global average pooling
            return F.adaptive_avg_pool2d(inputs[0], 1)
        return F.avg_pool2d(
            inputs[0], a["kernel"], a["stride"], a["padding"], a["ceil_mode"], a.get("count_include_pad", True)
        )

    def linear(self, node: Node, inputs: list[Any]) -> Any:
        import torch.nn.functional as F

        bias = self.param(node, "bias") if node.attrs["bias"] else None
        return F.linear(inputs[0], self.param(node, "weight"), bias)

    def channel_linear(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        bias = self.param(node, "bias") if node.attrs["bias"] else None
        w = self.param(node, "weight")
        y = torch.einsum("nchw,oc->nohw", inputs[0], w)
        return y if bias is None else y + bias[None, :, None, None]

    def flatten(self, node: Node, inputs: list[Any]) -> Any:
        import torch

        return torch.flatten(inputs[0], 1)

    def identity(self, node: Node, inputs: list[Any]) -> Any:
        return inputs[0]

    def add(self, node: Node, inputs: list[Any]) -> Any:
        return inputs[0] + inputs[1]

    def subsample(self, node: Node, inputs: list[Any]) -> Any:
        sh, sw = node.attrs["stride"]
        return inputs[0][:, :, ::sh, ::sw]

    def pad(self, node: Node, inputs: list[Any]) -> Any:
        import torch.nn.functional as F

        x = inputs[0]
        return F.pad(x, (0, 0, 0, 0, 0, node.attrs["out"] - x.shape[1]))


# public methods of Interpreter that are not ops, so that an op of such a name is refused
_NOT_OPS = frozenset({"run", "run_node", "param"})
