"""Check checkpoints against a module and map them onto optimised graphs (BN folding).

A checkpoint is always in the spec's own key space (the unoptimised, train-mode module's keys). Before
anything is folded or loaded, `check_weights` compares it with what the module needs (`checkpoint_slots`,
which puts a folded BN's keys back), so eval mode reports the same missing / unexpected / wrong-shape
keys as train mode, and values that are no tensors, of an integer, boolean or complex type, NaN or
infinite, or negative variances are refused with the key named.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from archc.errors import WeightsError
from archc.ir import Graph

BN_STATS = ("weight", "bias", "running_mean", "running_var")
_LISTED = 5  # keys named per kind of problem


@dataclass(frozen=True)
class Slot:
    """What one checkpoint key must hold.

    Attributes:
        shape: the tensor's shape.
        floating: True for floating-point values, False for integer counters (num_batches_tracked).
        required: False for keys a checkpoint may leave out (a folded BN's num_batches_tracked).
    """

    shape: tuple[int, ...]
    floating: bool = True
    required: bool = True


def checkpoint_slots(own: Mapping[str, Any], graph: Graph | None = None) -> dict[str, Slot]:
    """The keys, shapes and kinds of values a checkpoint in the spec's key space needs for a module.

    Args:
        own: the module's state_dict.
        graph: its graph; each BN a pass folded into a conv is put back under the BN's own keys (and the
            conv's bias is dropped when the spec's conv has none).

    Returns:
        key -> Slot: the module's keys in order, then the folded BNs' keys.
    """
    out = {k: Slot(tuple(v.shape), bool(v.is_floating_point())) for k, v in own.items()}
    for node in graph.nodes() if graph is not None else ():
        if node.op != "fused_conv" or node.attrs.get("folded_bn") is None or f"{node.name}.weight" not in out:
            continue
        bn, channels = node.attrs["folded_bn"], out[f"{node.name}.weight"].shape[:1]
        if not node.attrs["conv_bias"]:
            out.pop(f"{node.name}.bias", None)
        for k in BN_STATS:
            out[f"{bn}.{k}"] = Slot(channels)
        out[f"{bn}.num_batches_tracked"] = Slot((), floating=False, required=False)
    return out


def weight_problems(state: Mapping[str, Any], slots: Mapping[str, Slot]) -> list[str]:
    """Everything that keeps `state` from loading into the module `slots` describes, one phrase each.

    Args:
        state: a state_dict (any values: a hostile file may hold lists or strings).
        slots: from checkpoint_slots().

    Returns:
        Phrases such as "missing 2 key(s): a, b" or "'fc.bias' has shape (100,), the network needs (10,)";
        empty when the state loads.
    """
    import torch

    missing = [k for k, s in slots.items() if s.required and k not in state]
    unexpected = sorted(str(k) for k in state if k not in slots)
    out = [
        f"{what} {len(keys)} key(s): {', '.join(keys[:_LISTED])}{' ...' if len(keys) > _LISTED else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    for key, value in state.items():
        slot = slots.get(key)
        if slot is None:
            continue
        if not isinstance(value, torch.Tensor):
            out.append(f"'{key}' is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != slot.shape:
            out.append(f"'{key}' has shape {tuple(value.shape)}, the network needs {slot.shape}")
        elif slot.floating and not value.is_floating_point():
            out.append(f"'{key}' holds {str(value.dtype).removeprefix('torch.')} values, the network needs floats")
        elif not slot.floating and (value.is_complex() or value.dtype == torch.bool):
            # a counter (num_batches_tracked) saved as a float still loads: torch copies it into the int buffer
            out.append(f"'{key}' holds {str(value.dtype).removeprefix('torch.')} values, the network needs integers")
        elif value.is_floating_point() and not bool(torch.isfinite(value).all()):
            out.append(f"'{key}' holds NaN or infinite values")
        elif key.endswith(".running_var") and bool((value < 0).any()):
            out.append(f"'{key}' holds negative variances")
    return out


def check_weights(state: Mapping[str, Any], slots: Mapping[str, Slot], what: str = "weights") -> None:
    """Raise a WeightsError listing weight_problems(), if there are any.

    Args:
        state: the checkpoint's state_dict.
        slots: from checkpoint_slots().
        what: how the message names the checkpoint (e.g. its path).

    Raises:
        WeightsError: a key is missing or unexpected, or a value is no tensor, of the wrong shape or type,
            NaN or infinite, or a negative variance.
    """
    problems = weight_problems(state, slots)
    if problems:
        raise WeightsError(
            f"{what} do not match the network: " + "; ".join(problems),
            hint="use a checkpoint of this spec with the same --set values (archc inspect --weights lists the keys)",
        )


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
