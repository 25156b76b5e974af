"""Size limits on what a spec may ask for: spec file bytes, parameters, activation bytes per image.

Each dimension of a layer is bounded by the op specs, but their products are not: a 3x3 conv
with ten million output channels, or a 3x999999x999999 input, passes every per-dimension
check and then asks torch for gigabytes or petabytes. These limits are checked before
anything is allocated (while the spec is read and elaborated), with the statement that
crosses them. Each is overridable through an environment variable (docs/language.md#size-limits).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from archc.errors import ArchcError, LimitError, Loc
from archc.ir import Node
from archc.ir.registry import describe

# defaults: the shipped specs stay well inside them (ResNet-152: 60M parameters; Faster R-CNN
# R101-C4 at 600x1000: 2.5 GiB of activations per image; the largest spec file: 2.2 KB)
DEFAULT_SPEC_BYTES = 1 << 20
DEFAULT_PARAMS = 200_000_000
DEFAULT_ACTIVATION_BYTES = 16 << 30
# float32: what `archc train` and `archc eval` allocate per value
BYTES_PER_VALUE = 4

ENV_SPEC_BYTES = "ARCHC_MAX_SPEC_BYTES"
ENV_PARAMS = "ARCHC_MAX_PARAMS"
ENV_ACTIVATION_BYTES = "ARCHC_MAX_ACTIVATION_BYTES"


@dataclass(frozen=True)
class Limits:
    """The bounds in force.

    Attributes:
        spec_bytes: the largest spec file (or spec text) read, in bytes.
        params: the most learnable parameters a net may have.
        activation_bytes: the most float32 bytes the values of one image's forward may take
            (every layer's output plus the input, as a training step keeps them).
    """

    spec_bytes: int = DEFAULT_SPEC_BYTES
    params: int = DEFAULT_PARAMS
    activation_bytes: int = DEFAULT_ACTIVATION_BYTES


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ArchcError(
            f"{name}={raw!r} is not a positive integer",
            hint=f"set {name} to a whole number like {default} (the default), or unset it",
        )
    return value


def current() -> Limits:
    """The limits from the environment (ARCHC_MAX_SPEC_BYTES, ARCHC_MAX_PARAMS, ARCHC_MAX_ACTIVATION_BYTES).

    Raises:
        ArchcError: a variable that is set but is not a positive integer.
    """
    return Limits(
        _env_int(ENV_SPEC_BYTES, DEFAULT_SPEC_BYTES),
        _env_int(ENV_PARAMS, DEFAULT_PARAMS),
        _env_int(ENV_ACTIVATION_BYTES, DEFAULT_ACTIVATION_BYTES),
    )


def _amount(n: int, unit: str) -> str:
    if unit == "bytes":
        for size, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if n >= size:
                return f"{n / size:.3g} {name} ({n:,} bytes)"
        return f"{n:,} bytes"
    return f"{n:,}"


def refuse(
    head: str, total: int, limit: int, unit: str, env: str, loc: Loc | None, why: str, notes: list[str] | None = None
) -> LimitError:
    """The LimitError for a total past its limit, naming the limit and how to raise it.

    Args:
        head: the start of the message, e.g. "the net's parameters reach".
        total: how much the spec asks for.
        limit: the limit in force.
        unit: "bytes" or "" (a count).
        env: the environment variable that overrides the limit.
        loc: the statement (or `use`) that crosses the limit.
        why: the first sentence of the hint: what usually causes this.
        notes: extra lines, e.g. what the statement alone adds.
    """
    return LimitError(
        f"{head} {_amount(total, unit)}, past the limit of {_amount(limit, unit)} ({env})",
        loc,
        hint=f"{why}; if it really is this large, raise the limit with the environment variable "
        f"{env} (e.g. {env}={limit * 4}; see docs/language.md#size-limits)",
        notes=notes or (),
    )


class Budget:
    """Running totals of an elaboration, refused at the statement that crosses a limit.

    Args:
        limits: the bounds in force.
        max_nodes: the graph-node bound of the elaboration.
        steps_per_node: block calls plus repeat iterations allowed per node of the bound.
    """

    def __init__(self, limits: Limits, max_nodes: int, steps_per_node: int = 1) -> None:
        self.limits = limits
        self.step_limit = steps_per_node * max_nodes + 1000
        self.steps = 0
        self.params = 0
        self.values = 0  # of one image's forward, the input included

    def account(self, node: Node, loc: Loc) -> None:
        """Add a new node's parameters and output to the totals.

        Raises:
            LimitError: the net's parameters or one image's activations pass their limit.
        """
        self.params += node.params
        if self.params > self.limits.params:
            raise refuse(
                "the net's parameters reach",
                self.params,
                self.limits.params,
                "",
                ENV_PARAMS,
                loc,
                "check the channel and class counts (and --set values)",
                notes=[f"this {node.op} alone has {node.params:,} parameters"],
            )
        values = math.prod(node.shape)
        self.values += values
        total = self.values * BYTES_PER_VALUE
        if total > self.limits.activation_bytes:
            what = "the input" if node.op == "input" else f"the output of this {node.op},"
            raise refuse(
                "one image's float32 activations reach",
                total,
                self.limits.activation_bytes,
                "bytes",
                ENV_ACTIVATION_BYTES,
                loc,
                "check the input size and channel counts (and --set values)",
                notes=[f"{what} {describe(node.shape)} alone is {values * BYTES_PER_VALUE:,} bytes"],
            )

    def step(self, loc: Loc) -> None:
        """Count a block call or repeat iteration; refuse runaway expansion that emits no nodes.

        Raises:
            LimitError: past the bound.
        """
        self.steps += 1
        if self.steps > self.step_limit:
            raise LimitError(
                f"the spec expands past {self.step_limit} block calls and repeat iterations",
                loc,
                hint="check repeat counts and blocks that call other blocks many times",
            )
