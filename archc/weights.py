"""Map checkpoints in the spec's own key space onto optimised graphs (BN folding)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from archc.errors import WeightsError
from archc.ir import Graph


def fold_state_dict(graph: Graph, state: Mapping[str, Any]) -> dict[str, Any]:
    """Fold the BN statistics named by each fused_conv into its weight and bias.

    For s = gamma / sqrt(running_var + eps):  W' = W * s,  b' = (b - running_mean) * s + beta.
    Keys of folded BNs are consumed; every other key passes through unchanged.

    Args:
        graph: the optimised graph (its fused_conv nodes record the folded BN's name).
        state: a state_dict in the unoptimised model's key space.

    Returns:
        A state_dict for the optimised module.

    Raises:
        WeightsError: a key the fold needs is missing.
    """
    import torch

    out = dict(state)
    for node in graph.nodes():
        if node.op != "fused_conv" or node.attrs["folded_bn"] is None:
            continue
        conv, bn = node.name, node.attrs["folded_bn"]
        need = [f"{conv}.weight"] + [f"{bn}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        if node.attrs["conv_bias"]:
            need.append(f"{conv}.bias")
        missing = [k for k in need if k not in out]
        if missing:
            raise WeightsError(f"cannot fold '{bn}' into '{conv}': the weights have no {', '.join(missing)}")
        w = out[f"{conv}.weight"]
        work = torch.float64  # fold in double precision, then return to the checkpoint's dtype
        gamma, beta = out.pop(f"{bn}.weight").to(work), out.pop(f"{bn}.bias").to(work)
        mean, var = out.pop(f"{bn}.running_mean").to(work), out.pop(f"{bn}.running_var").to(work)
        out.pop(f"{bn}.num_batches_tracked", None)
        scale = gamma / torch.sqrt(var + node.attrs["bn_eps"])
        bias = out[f"{conv}.bias"].to(work) if node.attrs["conv_bias"] else torch.zeros_like(mean)
        out[f"{conv}.weight"] = (w.to(work) * scale.reshape(-1, 1, 1, 1)).to(w.dtype)
        out[f"{conv}.bias"] = ((bias - mean) * scale + beta).to(w.dtype)
    return out
