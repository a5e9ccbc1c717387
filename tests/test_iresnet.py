"""The IResNet backbone: block semantics checked against a functional re-derivation, stage
geometry, and size inference from state dicts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from invkit.nets.iresnet import IBasicBlock, IResNet, infer_stages, make_stage, make_stem


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values everywhere, including BN statistics, so that every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                base = torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var") else torch.randn(t.shape, generator=g) * 0.3
                t.copy_(base)


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                        False, 0.0, 1e-5)


@pytest.mark.parametrize("stride,in_ch,out_ch", [(1, 8, 8), (2, 8, 16), (2, 8, 8)])
def test_block_matches_functional_definition(stride, in_ch, out_ch):
    block = IBasicBlock(in_ch, out_ch, stride).eval()
    _randomise(block)
    sd = block.state_dict()
    x = torch.randn(2, in_ch, 10, 10)
    # BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the shortcut, no activation after.
    y = _bn(x, sd, "bn1.")
    y = F.conv2d(y, sd["conv1.weight"], padding=1)
    y = F.prelu(_bn(y, sd, "bn2."), sd["prelu.weight"])
    y = _bn(F.conv2d(y, sd["conv2.weight"], stride=stride, padding=1), sd, "bn3.")
    if stride != 1 or in_ch != out_ch:
        short = _bn(F.conv2d(x, sd["downsample.0.weight"], stride=stride), sd, "downsample.1.")
    else:
        assert block.downsample is None
        short = x
    expected = y + short
    got = block(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # No activation after the addition: outputs take negative values.
    assert (got < 0).any()


def test_stage_first_block_projects_and_rest_do_not():
    stage = make_stage(8, 16, depth=3, stride=2)
    assert stage[0].downsample is not None and stage[0].conv2.stride == (2, 2)
    assert all(b.downsample is None and b.conv2.stride == (1, 1) for b in stage[1:])
    with pytest.raises(ValueError, match="at least one block"):
        make_stage(8, 16, depth=0)


def test_stem_and_stage_geometry():
    net = IResNet(depths=(1, 2, 1, 1), widths=(8, 16, 24, 32), stem_width=8).eval()
    outs = net.forward_stages(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 24, 4, 4), (2, 32, 2, 2)]
    stem = make_stem(3, 8)
    assert [k for k in stem.state_dict()] == ["0.weight", "1.weight", "1.bias", "1.running_mean",
                                              "1.running_var", "1.num_batches_tracked", "2.weight"]
    assert stem[0].bias is None and stem[0].stride == (1, 1)


def test_infer_stages_reads_depths_and_widths():
    net = IResNet(depths=(2, 1, 3, 1), widths=(8, 16, 24, 32), stem_width=8)
    assert infer_stages(net.state_dict(), lambda i: f"layer{i + 1}.") == ((2, 1, 3, 1), (8, 16, 24, 32))
    sd = dict(net.state_dict())
    for key in [k for k in sd if k.startswith("layer3.")]:
        del sd[key]
    with pytest.raises(KeyError, match="stage 3"):
        infer_stages(sd, lambda i: f"layer{i + 1}.")


def test_wrong_stage_count_is_refused():
    with pytest.raises(ValueError, match="4 stages"):
        IResNet(depths=(1, 1, 1), widths=(8, 16, 32))
