"""`archc export`: ONNX (onnxruntime), TorchScript and standalone Python match the torch backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import archc
from archc.bench.reference import randomise
from archc.cli import main

ROOT = Path(__file__).resolve().parents[2]
RESNET20 = ROOT / "specs" / "cifar" / "resnet20.arch"
RESNET18 = ROOT / "specs" / "resnet18.arch"
SMALL = {"input_size": "3x64x64"}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load, the legacy exporter
TOL = 1e-4


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


def random_weights(spec: Path, path: Path, overrides: dict | None = None, seed: int = 0) -> Path:
    """A train-mode (checkpoint key space) state with random weights and random BN statistics."""
    out = randomise(archc.compile(spec, overrides=overrides), seed).state_dict()
    save_file({k: v.contiguous() for k, v in out.items()}, str(path))
    return path


def reference(spec: Path, weights: Path, mode: str = "eval", overrides: dict | None = None) -> torch.nn.Module:
    return archc.compile(spec, mode=mode, overrides=overrides, weights=weights).eval()


def assert_close(got, want: torch.Tensor) -> None:
    got = torch.as_tensor(got)
    assert got.shape == want.shape
    assert want.abs().max() > 1e-2  # not a degenerate comparison
    assert (got - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item())


@pytest.fixture(scope="module")
def r20_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_weights(RESNET20, tmp_path_factory.mktemp("w") / "resnet20.safetensors")


def onnx_outputs(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])


def test_onnx_resnet20_matches_torch_backend_with_dynamic_batch(tmp_path: Path, r20_weights: Path) -> None:
    import onnx

    out = tmp_path / "r20.onnx"
    code, stdout, stderr = run(
        "export", RESNET20, "--format", "onnx", "-o", out, "--weights", r20_weights, "--mode", "eval", "--batch", "2"
    )
    assert code == 0, stderr
    assert "dynamo exporter" in stdout and "checked with onnxruntime" in stdout
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    net = reference(RESNET20, r20_weights)
    for batch in (1, 5):  # neither is the export's example batch
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            assert_close(onnx_outputs(out, x), net(x))


def test_onnx_resnet18_small_input(tmp_path: Path) -> None:
    weights = random_weights(RESNET18, tmp_path / "r18.safetensors", SMALL, seed=1)
    out = tmp_path / "r18.onnx"
    code, _, stderr = run(
        "export", RESNET18, "--format", "onnx", "-o", out, "--weights", weights, "--set", "input_size=3x64x64"
    )
    assert code == 0, stderr
    net = reference(RESNET18, weights, overrides=SMALL)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close(onnx_outputs(out, x), net(x))


def test_onnx_legacy_exporter_and_opset(tmp_path: Path, r20_weights: Path) -> None:
    import onnx

    out = tmp_path / "legacy.onnx"
    code, stdout, stderr = run(
        "export",
        RESNET20,
        "-o",
        out,
        "--weights",
        r20_weights,
        "--onnx-exporter",
        "legacy",
        "--opset",
        "17",
        "--no-check",
    )
    assert code == 0, stderr
    assert "legacy exporter, opset 17" in stdout and "not checked" in stdout
    assert {o.version for o in onnx.load(str(out)).opset_import if o.domain == ""} == {17}
    net = reference(RESNET20, r20_weights)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert_close(onnx_outputs(out, x), net(x))


def test_onnx_without_its_packages_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    code, _, stderr = run("export", RESNET20, "--format", "onnx", "-o", tmp_path / "x.onnx")
    assert code == 2
    assert "needs the 'onnxscript' package" in stderr and "archc[export]" in stderr and "legacy" in stderr
    monkeypatch.setitem(sys.modules, "onnx", None)
    code, _, stderr = run("export", RESNET20, "-o", tmp_path / "x.onnx", "--onnx-exporter", "legacy")
    assert code == 2 and "legacy exporter needs the 'onnx' package" in stderr


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_torchscript_loads_with_jit_load_and_matches(tmp_path: Path, r20_weights: Path, mode: str) -> None:
    out = tmp_path / f"r20_{mode}.pt"
    code, stdout, stderr = run(
        "export", RESNET20, "--format", "torchscript", "-o", out, "--weights", r20_weights, "--mode", mode
    )
    assert code == 0, stderr
    assert "torch.jit.script" in stdout and "trace" not in stdout
    loaded = torch.jit.load(str(out))
    net = reference(RESNET20, r20_weights, mode=mode)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert_close(loaded(x), net(x))


def test_torchscript_falls_back_to_trace_and_says_so(
    tmp_path: Path, r20_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args, **kwargs):
        raise RuntimeError("scripting is not supported here")

    monkeypatch.setattr(torch.jit, "script", refuse)
    out = tmp_path / "traced.pt"
    code, stdout, stderr = run("export", RESNET20, "-o", out, "--weights", r20_weights, "--batch", "2")
    assert code == 0, stderr
    assert "torch.jit.script failed (scripting is not supported here)" in stderr
    assert "falling back to torch.jit.trace" in stderr
    assert "torch.jit.trace (script failed)" in stdout
    net = reference(RESNET20, r20_weights)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert_close(torch.jit.load(str(out))(x), net(x))


BLOCKED_RUN = r"""
import importlib.util, sys
for name in ("archc", "archc_torch", "archc_triton"):
    sys.modules[name] = None  # any import of archc now fails
import torch
from safetensors.torch import load_file
spec = importlib.util.spec_from_file_location("exported", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
model = getattr(mod, sys.argv[2])()
model.load_state_dict(load_file(sys.argv[3]))
model.eval()
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[4])), sys.argv[5])
print("ok", mod.__doc__.splitlines()[0])
"""


def test_python_export_runs_without_archc(tmp_path: Path, r20_weights: Path) -> None:
    out = tmp_path / "resnet20_export.py"
    code, stdout, stderr = run("export", RESNET20, "--format", "python", "-o", out, "--weights", r20_weights)
    assert code == 0, stderr
    companion = tmp_path / "resnet20_export.safetensors"
    assert companion.is_file() and f"wrote {companion}" in stdout
    src = out.read_text()
    doc = src.split('"""')[1]
    assert 'load_file("resnet20_export.safetensors")' in doc and "from resnet20_export import Resnet20" in doc
    assert "archc" not in "".join(line for line in src.splitlines() if line.startswith(("import", "from")))
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED_RUN)
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(out),
            "Resnet20",
            str(companion),
            str(tmp_path / "x.pt"),
            str(tmp_path / "y.pt"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok resnet20 as plain PyTorch")
    net = reference(RESNET20, r20_weights)
    with torch.no_grad():
        assert_close(torch.load(tmp_path / "y.pt"), net(x))


def test_python_export_without_weights_writes_no_companion(tmp_path: Path) -> None:
    out = tmp_path / "net.py"
    code, stdout, _ = run("export", RESNET20, "-o", out, "--mode", "train")
    assert code == 0
    assert not (tmp_path / "net.safetensors").exists()
    assert "init_weights" in out.read_text().split('"""')[1] and "checked with the written source" in stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "missing.safetensors", "-o", "x.onnx"], "weights file not found"),
        (["-o", "x.bin"], "cannot tell the export format"),
        (["--format", "python", "-o", "x.py", "--opset", "17"], "--opset applies to ONNX export"),
        (["-o", "x.pt", "--set", "shortcut=Q"], "error"),
    ],
)
def test_errors_exit_2(tmp_path: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run("export", RESNET20, *args)
    assert code == 2
    assert message in stderr


def test_wrong_weights_exit_2(tmp_path: Path) -> None:
    weights = random_weights(RESNET20, tmp_path / "w100.safetensors", {"num_classes": "100"})
    code, _, stderr = run("export", RESNET20, "-o", tmp_path / "x.pt", "--weights", weights)
    assert code == 2
    assert "'fc.bias' has shape (100,), the network needs (10,)" in stderr


def test_help_has_examples() -> None:
    code, out, _ = run("export", "--help")
    assert code == 0
    assert "Examples:" in out and "archc export specs/" in out
    for fmt in ("onnx", "torchscript", "python"):
        assert fmt in out


def test_python_source_claims_only_what_is_true(tmp_path: Path) -> None:
    import ast

    import archc
    from archc.commands.export import python_source

    b = archc.build(RESNET20, lower=False)
    src, cls = python_source(b, tmp_path / "net.py", tmp_path / "net.safetensors")
    tree = ast.parse(src)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__", "math", "typing", "collections"} == {"torch"}  # what "imports only torch" says
    doc = " ".join(ast.get_docstring(tree).split())
    assert f"This file imports only torch. {cls}()" in doc and "Needs only torch" not in doc
    # the loader in the docstring reads safetensors: the docstring says so
    assert "from safetensors.torch import load_file" in doc and "needs the safetensors package" in doc
