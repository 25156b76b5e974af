"""freeze_bn and freeze_at: BN as a fixed affine with BN's keys, frozen stem and stages, surviving train()."""

import pytest
import torch
from click.testing import CliRunner

import archc
from archc.bench.reference import randomise
from archc.cli import main
from archc.errors import ArchcError

R18 = "specs/resnet18.arch"


def _weights(seed=0):
    torch.manual_seed(seed)
    m = archc.compile(R18)
    randomise(m, seed)
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_freeze_bn_rewrites_every_bn_and_matches_bn_in_eval_mode():
    b = archc.build(R18, passes=["dce", "freeze_bn", "fuse_train", "channels_last"])
    rec = {r.name: r.changes for r in b.passes.records}
    assert rec["freeze_bn"] == 20 and rec["fuse_train"] == 0  # frozen BN is not batch-statistics BN
    assert sum(n.op == "frozen_bn" for n in b.graph.nodes()) == 20
    b.graph.lint()
    w = _weights()
    frozen = b.module
    frozen.load_state_dict(w)
    assert set(frozen.state_dict()) == set(w)  # the same keys as nn.BatchNorm2d, num_batches_tracked included
    ref = archc.compile(R18)
    ref.load_state_dict(w)
    x = torch.randn(2, 3, 64, 64)
    frozen.train()  # train mode: still the running statistics
    torch.testing.assert_close(frozen(x), ref.eval()(x), rtol=1e-5, atol=1e-5)
    assert not any(p is not None for n, p in frozen.named_parameters() if "bn" in n)


def test_fold_bn_folds_frozen_bn_in_eval():
    w = _weights(1)
    b = archc.build(R18, mode="eval", frozen_bn=True)
    assert {r.name: r.changes for r in b.passes.records}["fold_bn"] == 20
    assert not any(n.op in ("bn", "frozen_bn") for n in b.graph.nodes())
    archc.load_weights(b.module, w, b.graph)
    ref = archc.compile(R18, weights=w, mode="eval")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(b.module.eval()(x), ref(x), rtol=1e-4, atol=1e-4)


def test_frozen_parameters_and_bn_statistics_do_not_change_after_a_step_in_train_mode():
    w = _weights(2)
    m = archc.compile(R18, frozen_bn=True, freeze_at=1, weights=w)
    m.eval().train()  # toggling modes must not undo the freeze
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(2):
        loss = m(torch.randn(4, 3, 64, 64)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.state_dict()
    frozen_prefixes = ("conv1.", "bn1.", "layer1.")
    for k, v in before.items():
        if k.startswith(frozen_prefixes) or "bn" in k or "downsample.1" in k:
            assert torch.equal(after[k], v), k  # bit-identical
        else:
            assert not torch.equal(after[k], v), k
    assert {n for n, p in m.named_parameters() if not p.requires_grad} == {
        n for n, _ in m.named_parameters() if n.startswith(frozen_prefixes)
    }


def test_freeze_at_counts_the_stem_and_stages():
    stem = ["conv1", "bn1", "relu", "maxpool"]
    assert archc.build(R18, freeze_at=0, lower=False).graph.meta["frozen"] == stem
    assert archc.build(R18, freeze_at=4, lower=False).graph.meta["frozen"] == stem + [f"layer{i}" for i in range(1, 5)]
    m = archc.compile(R18, freeze_at=0)
    assert {n for n, p in m.named_parameters() if not p.requires_grad} == {"conv1.weight", "bn1.weight", "bn1.bias"}
    with pytest.raises(ArchcError, match="freeze_at=5, but net 'resnet18' has 4 stages"):
        archc.build(R18, freeze_at=5, lower=False)
    with pytest.raises(ArchcError, match="choose 0..4"):
        archc.build(R18, freeze_at=-1, lower=False)


def test_cli_and_standalone_source():
    import json

    r = CliRunner().invoke(main, ["build", R18, "--frozen-bn", "--freeze-at", "2", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["frozen"][-2:] == ["layer1", "layer2"] and d["trainable_params"] < d["params"]
    src = archc.build(R18, frozen_bn=True, lower=False).graph
    from archc.backend import get_backend

    text = get_backend("torch").source(src)
    assert "class FrozenBatchNorm2d(nn.Module)" in text
    scope: dict = {}
    exec(compile(text, "<standalone>", "exec"), scope)
    net = scope["Resnet18"]()
    assert type(net.bn1).__name__ == "FrozenBatchNorm2d" and net(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
