"""What every candidate of a bench shares: the checked settings, the batch, the starting weights, the oracle.

All candidates start from the same weights, in the spec's own key space: the eager
baseline's init (archc's He init), random BN affine parameters and BN running statistics
calibrated on the benchmark batch (one train-mode forward with cumulative averaging). Each
candidate's output on the batch is compared in float32 (no autocast, no TF32) with the
oracle's: the IR interpreter (archc.ir.Interpreter, reference torch.nn.functional ops, no
generated code) running the spec's graph without passes, in eval mode for eval, with batch
statistics for train.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from archc.errors import ArchcError, BackendError

BASELINES = ("eager", "reference", "compile")
DTYPES = ("bf16", "fp32")
MODES = ("train", "eval")
# Of the output's scale. Summation order differs between implementations (about 1e-6 in
# float32), and GPU kernels may use TF32 internally (about 1e-3); a wrong function differs by O(1).
OUTPUT_RTOL = 1e-2


@dataclass
class BenchConfig:
    """What to measure.

    Attributes:
        spec: a `.arch` path or text.
        backends: archc backends to measure (each gives one candidate).
        baselines: any of "eager" (the spec without passes), "reference" (the hand-written
            net, where one matches the spec) and "compile" (torch.compile of eager).
        mode: "train" or "eval".
        batch: images per step.
        dtype: "bf16" (autocast) or "fp32"; None: bf16 on a GPU, fp32 on CPU.
        iters: timed steps (the median is reported).
        warmup: untimed steps after the first one.
        overrides: net parameters, like `--set`.
        device: "cuda" or "cpu"; None: cuda when available.
        compile_mode: torch.compile mode; None: "max-autotune" for eval, the default for train.
        seed: for the weights and the synthetic batch.
        threads: torch's intra-op CPU threads during the run; None: archc.threads.default_threads(load_aware=False).
    """

    spec: str | os.PathLike
    backends: tuple[str, ...] = ("torch",)
    baselines: tuple[str, ...] = ("eager", "reference")
    mode: str = "train"
    batch: int = 16
    dtype: str | None = None
    iters: int = 10
    warmup: int = 3
    overrides: Mapping[str, Any] = field(default_factory=dict)
    device: str | None = None
    compile_mode: str | None = None
    seed: int = 0
    threads: int | None = None


class Workload:
    """The checked settings of one bench and what its candidates share: device, batch, weights, oracle output.

    Args:
        cfg: what to measure.

    Raises:
        ArchcError: a bad spec or option, or a train-mode bench of a net without a class vector output.
        BackendError: a backend that is not installed.
    """

    def __init__(self, cfg: BenchConfig) -> None:
        import torch

        from archc.api import build
        from archc.backend import available

        self.torch = torch
        self.cfg = cfg
        if cfg.mode not in MODES:
            raise ArchcError(f"unknown mode '{cfg.mode}'", hint=f"modes: {', '.join(MODES)}")
        bad = [b for b in cfg.baselines if b not in BASELINES]
        if bad:
            raise ArchcError(f"unknown baseline '{bad[0]}'", hint=f"baselines: {', '.join(BASELINES)}")
        installed = available()
        for name in cfg.backends:
            if name not in installed:
                raise BackendError(
                    f"unknown backend '{name}'", hint=f"installed backends: {', '.join(sorted(installed))}"
                )
        if cfg.batch < 1 or cfg.iters < 1 or cfg.warmup < 0:
            raise ArchcError("batch and iters must be at least 1, warmup at least 0")
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        self.dtype = cfg.dtype or ("bf16" if self.cuda else "fp32")
        if self.dtype not in DTYPES:
            raise ArchcError(f"unknown dtype '{self.dtype}'", hint=f"dtypes: {', '.join(DTYPES)}")
        if self.cuda:
            torch.backends.cudnn.benchmark = True

        # The spec's graph (the same pipeline the archc candidates use) picks the reference.
        self.graph = build(cfg.spec, mode=cfg.mode, overrides=cfg.overrides, lower=False).graph
        self.plain = build(cfg.spec, mode=cfg.mode, overrides=cfg.overrides, passes=[], lower=False).graph
        self.ref, self.ref_note = self._find_reference()
        self.shape = tuple(self.graph.input.shape)
        g = torch.Generator().manual_seed(cfg.seed)
        x = torch.randn((cfg.batch, *self.shape), generator=g)
        self.x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(self._classes(), (cfg.batch,), generator=g).to(self.device)
        self.state = self._weights()
        self.want = self._oracle_output()

    def _find_reference(self) -> tuple[Any, str | None]:
        """The hand-written net matching the spec, or None and why not."""
        if "reference" not in self.cfg.baselines:
            return None, None
        from archc.bench.reference import reference_for

        try:
            return reference_for(self.graph), None
        except ArchcError as err:
            return None, err.message

    def _classes(self) -> int:
        """The class count of the cross-entropy labels (train mode needs a class vector)."""
        out = self.graph.output.shape
        if self.cfg.mode == "train" and (len(out) != 1 or len(self.graph.outputs) != 1):
            n = len(self.graph.outputs)
            what = f"it has {n} outputs" if n != 1 else f"its output is {'x'.join(map(str, out))}"
            raise ArchcError(
                f"archc bench trains '{self.graph.name}' with cross-entropy on a class vector, but {what}",
                hint="bench it with --mode eval, or end the net with `flatten` and a `linear` classifier",
            )
        return out[0] if len(out) == 1 else 1

    def _weights(self) -> dict[str, Any]:
        """The eager baseline's init, random BN affine, BN statistics calibrated on the batch."""
        torch = self.torch
        model = self.eager_model(self.cfg.seed)
        g = torch.Generator().manual_seed(self.cfg.seed + 1)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.affine]
        momenta = [m.momentum for m in bns]
        with torch.no_grad():
            for m in bns:
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
                m.momentum = None  # cumulative average: after one forward, the batch's statistics
            model.train()
            with self.exact():
                model(self.x)
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    def eager_model(self, seed: int | None = None) -> Any:
        """The eager baseline: the spec without passes, as standard nn modules, channels_last.

        Args:
            seed: initialise from this seed; None: load the shared weights.
        """
        from archc.api import build

        if seed is not None:
            self.torch.manual_seed(seed)
        b = build(self.cfg.spec, mode=self.cfg.mode, overrides=self.cfg.overrides, passes=[])
        if seed is None:
            b.module.load_state_dict(self.state)
        return b.module.to(self.device, memory_format=self.torch.channels_last)

    def reference_model(self) -> Any:
        """The hand-written net at the shared weights, channels_last."""
        torch = self.torch
        model = self.ref.make().to(self.device, memory_format=torch.channels_last)
        model.load_state_dict(self.state)  # copies into the channels_last parameters
        return model

    def _flat(self, out: Any) -> Any:
        """One float32 (N, K) tensor of an output: a dict of outputs is flattened and joined in order."""
        if isinstance(out, dict):
            return self.torch.cat([v.float().flatten(1) for v in out.values()], 1)
        return out.float().flatten(1)

    def _oracle_output(self) -> Any:
        """The IR interpreter's output on the spec's graph without passes (see the module docstring)."""
        from archc.ir import Interpreter

        with self.torch.no_grad(), self.exact():
            out = Interpreter(self.plain, self.state).run(self.x, train=self.cfg.mode == "train")
        return self._flat(out)

    def check(self, row: dict[str, Any], model: Any) -> None:
        """Fill the row's output comparison with the oracle: max_abs_diff, output_scale, output_close."""
        with self.torch.no_grad(), self.exact():
            got = self._flat(model.train(self.cfg.mode == "train")(self.x))
        row["max_abs_diff"] = (got - self.want).abs().max().item()
        row["output_scale"] = self.want.abs().max().item()
        row["output_close"] = row["max_abs_diff"] <= OUTPUT_RTOL * max(1.0, row["output_scale"])

    @contextlib.contextmanager
    def exact(self) -> Iterator[None]:
        """float32 without TF32, for comparing outputs."""
        torch = self.torch
        if not self.cuda:
            yield
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
