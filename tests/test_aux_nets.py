"""Auxiliary networks: ArcFace and BiSeNet load files of exactly the released layouts (random
values made here, key tables written out independently of the modules), fail clearly on a missing
file; LPIPS reads the lpips distribution's calibrated heads, runs on random trunks, loads
torchvision-layout trunk files, and equals ``lpips.LPIPS`` numerically."""

from __future__ import annotations

import copy
import importlib
import sys
import types

import pytest
import torch

from invkit.io import zoo
from invkit.nets.arcface import ArcFace
from invkit.nets.bisenet import CLASSES, BiSeNet
from invkit.nets.lpips import LPIPS, Trunk, heads_file, load_heads


def _bn(prefix: str, c: int, out: dict) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        out[f"{prefix}.{name}"] = (c,)
    out[f"{prefix}.num_batches_tracked"] = ()


def _random_state(table: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in table.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    return state


# ---- ArcFace ---------------------------------------------------------------------------------
def insightface_r50_table() -> dict[str, tuple]:
    """Keys and shapes of insightface's ``iresnet50`` state dict (``backbone.pth``)."""
    t: dict[str, tuple] = {"conv1.weight": (64, 3, 3, 3)}
    _bn("bn1", 64, t)
    t["prelu.weight"] = (64,)
    inplanes = 64
    for s, (planes, depth) in enumerate(zip((64, 128, 256, 512), (3, 4, 14, 3))):
        for j in range(depth):
            p = f"layer{s + 1}.{j}"
            cin = inplanes if j == 0 else planes
            _bn(f"{p}.bn1", cin, t)
            t[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
            _bn(f"{p}.bn2", planes, t)
            t[f"{p}.prelu.weight"] = (planes,)
            t[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            _bn(f"{p}.bn3", planes, t)
            if j == 0:
                t[f"{p}.downsample.0.weight"] = (planes, inplanes, 1, 1)
                _bn(f"{p}.downsample.1", planes, t)
        inplanes = planes
    _bn("bn2", 512, t)
    t["fc.weight"] = (512, 512 * 7 * 7)
    t["fc.bias"] = (512,)
    _bn("features", 512, t)
    return t


def test_arcface_loads_released_r50_layout(tmp_path):
    table = insightface_r50_table()
    state = _random_state(table)
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    net = ArcFace.from_file(path)
    assert net.depths == (3, 4, 14, 3) and net.widths == (64, 128, 256, 512)
    assert net.input_size == 112 and net.embedding_dim == 512
    own = net.state_dict()
    assert {k: tuple(v.shape) for k, v in own.items()} == table
    for key, value in state.items():
        assert torch.equal(own[key], value), key
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_arcface_small_forward_levels_and_embedding():
    net = ArcFace(depths=(1, 1, 1, 1), widths=(8, 16, 16, 32), stem_width=8, embedding_dim=16).eval()
    state = _random_state({k: tuple(v.shape) for k, v in net.state_dict().items()}, seed=3)
    net.load_state_dict(state)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    levels = net.multi_level(x)
    assert [tuple(t.shape) for t in levels] == [(2, 8, 56, 56), (2, 16, 28, 28), (2, 16, 14, 14),
                                                (2, 32, 7, 7), (2, 16)]
    # The embedding head: BN2d -> flatten -> fc -> BN1d (eval statistics).
    flat = torch.nn.functional.batch_norm(levels[3], state["bn2.running_mean"], state["bn2.running_var"],
                                          state["bn2.weight"], state["bn2.bias"], False, 0, 1e-5).flatten(1)
    emb = torch.nn.functional.linear(flat, state["fc.weight"], state["fc.bias"])
    emb = torch.nn.functional.batch_norm(emb, state["features.running_mean"], state["features.running_var"],
                                         state["features.weight"], state["features.bias"], False, 0, 1e-5)
    torch.testing.assert_close(levels[4], emb)
    torch.testing.assert_close(net(x), emb)
    # Inputs already at 112 px are used as they are.
    x112 = torch.rand(1, 3, 112, 112)
    assert torch.equal(net.resize(x112), x112)


def test_arcface_missing_and_wrong_files(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "backbone.pth"
    with pytest.raises(FileNotFoundError, match="nowhere/backbone.pth"):
        ArcFace.from_file(missing)
    bad = tmp_path / "not_arcface.pth"
    torch.save({"weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="not_arcface.pth"):
        ArcFace.from_file(bad)
    monkeypatch.setenv("INVKIT_OFFLINE", "1")
    monkeypatch.setenv("INVKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("INVKIT_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("INVKIT_ZOO_ARCFACE_R50", raising=False)
    with pytest.raises(FileNotFoundError, match="backbone.pth"):
        ArcFace.from_zoo()


# ---- BiSeNet ---------------------------------------------------------------------------------
def face_parsing_table(n_classes: int = 19) -> dict[str, tuple]:
    """Keys and shapes of zllrunning/face-parsing.PyTorch's ``79999_iter.pth``."""
    t: dict[str, tuple] = {}

    def cbr(p, cin, cout, k):
        t[f"{p}.conv.weight"] = (cout, cin, k, k)
        _bn(f"{p}.bn", cout, t)

    r = "cp.resnet"
    t[f"{r}.conv1.weight"] = (64, 3, 7, 7)
    _bn(f"{r}.bn1", 64, t)
    cin = 64
    for i, cout in enumerate((64, 128, 256, 512)):
        for j in range(2):
            p = f"{r}.layer{i + 1}.{j}"
            c_in = cin if j == 0 else cout
            t[f"{p}.conv1.weight"] = (cout, c_in, 3, 3)
            _bn(f"{p}.bn1", cout, t)
            t[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            _bn(f"{p}.bn2", cout, t)
            if j == 0 and i > 0:
                t[f"{p}.downsample.0.weight"] = (cout, c_in, 1, 1)
                _bn(f"{p}.downsample.1", cout, t)
        cin = cout
    for name, c in (("arm16", 256), ("arm32", 512)):
        cbr(f"cp.{name}.conv", c, 128, 3)
        t[f"cp.{name}.conv_atten.weight"] = (128, 128, 1, 1)
        _bn(f"cp.{name}.bn_atten", 128, t)
    cbr("cp.conv_head32", 128, 128, 3)
    cbr("cp.conv_head16", 128, 128, 3)
    cbr("cp.conv_avg", 512, 128, 1)
    cbr("ffm.convblk", 256, 256, 1)
    t["ffm.conv1.weight"] = (64, 256, 1, 1)
    t["ffm.conv2.weight"] = (256, 64, 1, 1)
    for name, cin, mid in (("conv_out", 256, 256), ("conv_out16", 128, 64), ("conv_out32", 128, 64)):
        cbr(f"{name}.conv", cin, mid, 3)
        t[f"{name}.conv_out.weight"] = (n_classes, mid, 1, 1)
    return t


def test_bisenet_loads_released_layout_and_parses(tmp_path):
    table = face_parsing_table()
    state = _random_state(table, seed=1)
    path = tmp_path / "79999_iter.pth"
    torch.save(state, path)
    net = BiSeNet.from_file(path, input_size=64)
    own = net.state_dict()
    assert {k: tuple(v.shape) for k, v in own.items()} == table
    assert all(torch.equal(own[k], v) for k, v in state.items())
    assert net.n_classes == len(CLASSES) == 19
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    outs = net(x)
    assert [tuple(o.shape) for o in outs] == [(2, 19, 64, 64)] * 3
    assert not torch.allclose(outs[0], outs[1])
    labels = net.parse(x)
    assert labels.shape == (2, 48, 48) and labels.dtype == torch.int64
    assert int(labels.min()) >= 0 and int(labels.max()) < 19
    mask = net.face_mask(x)
    assert mask.shape == (2, 1, 48, 48) and set(mask.unique().tolist()) <= {0.0, 1.0}
    # The face mask is exactly "label not in the excluded classes".
    keep = torch.tensor([c not in ("background", "neck", "neck_l", "cloth", "hat") for c in CLASSES])
    assert torch.equal(mask[:, 0].bool(), keep[labels])


def test_bisenet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="79999_iter.pth"):
        BiSeNet.from_file(tmp_path / "79999_iter.pth")
    state = _random_state(face_parsing_table())
    del state["ffm.conv1.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="broken.pth.*ffm.conv1.weight"):
        BiSeNet.from_file(path)


# ---- LPIPS -----------------------------------------------------------------------------------
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_heads_come_from_the_lpips_distribution(net):
    path = heads_file(net)
    assert path.parts[-4:] == ("lpips", "weights", "v0.1", f"{net}.pth")
    shipped = torch.load(path, map_location="cpu", weights_only=True)
    metric = LPIPS(net, trunk="random")
    for i, lin in enumerate(metric.lins):
        assert torch.equal(lin.weight, shipped[f"lin{i}.model.1.weight"])
    assert all((w >= 0).all() for w in load_heads(net))
    # Found without importing the package (importing it would import torchvision).
    assert "lpips" not in sys.modules


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_runs_on_random_trunk(net):
    torch.manual_seed(0)
    metric = LPIPS(net, trunk="random")
    x = (torch.rand(2, 3, 48, 48) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 48, 48) * 2 - 1
    d = metric(x, y)
    assert d.shape == (2,) and (d > 0).all()
    torch.testing.assert_close(metric(y, x), d)
    assert torch.allclose(metric(y, y), torch.zeros(2), atol=1e-7)
    total, layers = metric(x, y, per_layer=True)
    torch.testing.assert_close(sum(layers), total)
    d.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in metric.parameters())
    metric.train()
    assert not metric.training
    with pytest.raises(ValueError, match="at least"):
        metric(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def _torchvision_state(net: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in torchvision's ``alexnet`` / ``vgg16`` layout, classifier included."""
    trunk = Trunk(net)
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in trunk.state_dict().items()}
    state["classifier.1.weight"] = torch.randn(8, 4)  # ignored by LPIPS
    return state


def test_lpips_trunk_loads_torchvision_layout_via_zoo(tmp_path, monkeypatch):
    state = _torchvision_state("alex")
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.save(state, weights_dir / zoo.get("alexnet-imagenet").file_name)
    monkeypatch.setenv("INVKIT_WEIGHTS_DIR", str(weights_dir))
    metric = LPIPS("alex")  # trunk="imagenet" -> zoo -> INVKIT_WEIGHTS_DIR
    for key, value in metric.trunk.state_dict().items():
        assert torch.equal(value, state[key])
    metric2 = LPIPS("alex", trunk=weights_dir / "alexnet-owt-7be5be79.pth")
    x, y = torch.rand(2, 1, 3, 40, 40) * 2 - 1
    torch.testing.assert_close(metric(x, y), metric2(x, y))


def test_lpips_missing_trunk_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("INVKIT_OFFLINE", "1")
    monkeypatch.setenv("INVKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("INVKIT_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("INVKIT_ZOO_VGG16_IMAGENET", raising=False)
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        LPIPS("vgg")
    with pytest.raises(FileNotFoundError, match="elsewhere.pth"):
        LPIPS("alex", trunk=tmp_path / "elsewhere.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, bad)
    with pytest.raises(ValueError, match="bad.pth"):
        LPIPS("alex", trunk=bad)


def _compare_with_lpips_package(lpips_mod, net: str) -> None:
    ours = LPIPS(net, trunk="random")
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in ours.trunk.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    ref = lpips_mod.LPIPS(net=net, pnet_rand=True, verbose=False)
    # lpips splits torchvision's `features` into slice1..slice5 keeping the original indices.
    ref_state = {}
    for s, indices in enumerate(_SLICES[net], 1):
        for i in indices:
            for name, value in ours.trunk.features[i].state_dict().items():
                ref_state[f"slice{s}.{i}.{name}"] = value
    ref.net.load_state_dict(ref_state)
    x, y = torch.rand(2, 2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), ref(x, y).flatten(), rtol=1e-5, atol=1e-6)


_SLICES = {"alex": [range(0, 2), range(2, 5), range(5, 8), range(8, 10), range(10, 12)],
           "vgg": [range(0, 4), range(4, 9), range(9, 16), range(16, 23), range(23, 30)]}


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_equals_lpips_package(net):
    """Numerical equality with ``lpips.LPIPS`` on identical weights, where lpips imports."""
    try:
        import lpips
    except Exception as exc:  # noqa: BLE001 - any import failure means "not importable here"
        pytest.skip(f"lpips cannot be imported here ({type(exc).__name__}: torchvision does not import "
                    f"on this CPU torch build); see the stubbed-torchvision test below")
    _compare_with_lpips_package(lpips, net)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_equals_lpips_package_with_stubbed_torchvision(net, monkeypatch):
    """The lpips package's own code (input scaling, slicing, normalisation, heads, averaging)
    against ours, with torchvision replaced by a stub whose ``features`` are our trunk layers,
    so the package imports here. Trunk architecture is checked by the torchvision-layout test."""
    stub = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")

    def factory(name):
        def build(pretrained=False, **_):
            return types.SimpleNamespace(features=copy.deepcopy(Trunk(name).features))
        return build

    models.alexnet, models.vgg16 = factory("alex"), factory("vgg")
    models.squeezenet1_1 = models.resnet18 = None
    stub.models = models
    saved = {k: v for k, v in sys.modules.items() if k == "lpips" or k.startswith("lpips.")}
    for k in saved:
        del sys.modules[k]
    monkeypatch.setitem(sys.modules, "torchvision", stub)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    try:
        lpips = importlib.import_module("lpips")
        _compare_with_lpips_package(lpips, net)
    finally:
        for k in [k for k in sys.modules if k == "lpips" or k.startswith("lpips.")]:
            del sys.modules[k]
        sys.modules.update(saved)
