"""The Feature-Style encoder: the official ``143_enc.pth`` layout (key table written out here),
loading official-layout files (random values) for StyleGAN2, StyleGAN2-ADA and StyleGAN3
generators with outputs checked against a functional re-derivation of the official forward,
shapes, input resizing, and our own file format."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import load_reference

from invkit.fs_encoder import FeatureStyleEncoder, load_encoder, save_encoder
from invkit.inversion import Inversion
from invkit.io.checkpoint import CheckpointError
from invkit.testing import tiny_stylegan2

SMALL = {"depths": (1, 1, 1, 1), "widths": (8, 16, 16, 32), "stem_width": 8}


# ---- the official layout ---------------------------------------------------------------------
def _bn(prefix: str, c: int, out: dict) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        out[f"{prefix}.{name}"] = (c,)
    out[f"{prefix}.num_batches_tracked"] = ()


def official_table(num_ws=18, w_dim=512, feat_c=512, depths=(3, 4, 14, 3), widths=(64, 128, 256, 512),
                   stem=64, pool=3) -> dict[str, tuple]:
    """Keys and shapes of the official ``fs_encoder_v2`` state dict (``143_enc.pth`` at defaults)."""
    t: dict[str, tuple] = {"conv.0.weight": (stem, 3, 3, 3)}
    _bn("conv.1", stem, t)
    t["conv.2.weight"] = (stem,)
    cin = stem
    for s, (planes, depth) in enumerate(zip(widths, depths)):
        for j in range(depth):
            p = f"block_{s + 1}.{j}"
            c = cin if j == 0 else planes
            _bn(f"{p}.bn1", c, t)
            t[f"{p}.conv1.weight"] = (planes, c, 3, 3)
            _bn(f"{p}.bn2", planes, t)
            t[f"{p}.prelu.weight"] = (planes,)
            t[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            _bn(f"{p}.bn3", planes, t)
            if j == 0:
                t[f"{p}.downsample.0.weight"] = (planes, cin, 1, 1)
                _bn(f"{p}.downsample.1", planes, t)
        cin = planes
    _bn("content_layer.0", widths[2], t)
    t["content_layer.1.weight"] = (feat_c, widths[2], 3, 3)
    _bn("content_layer.2", feat_c, t)
    t["content_layer.3.weight"] = (feat_c,)
    t["content_layer.4.weight"] = (feat_c, feat_c, 3, 3)
    _bn("content_layer.5", feat_c, t)
    for i in range(num_ws):
        t[f"styles.{i}.weight"] = (w_dim, sum(widths) * pool * pool)
        t[f"styles.{i}.bias"] = (w_dim,)
    return t


def random_state(table: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in table.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(500)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:
            out[key] = torch.randn(shape, generator=g) * 0.1
    return out


def official_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official encoder's forward re-derived with functional ops from its state dict
    (heads' output WITHOUT the average latent, as the official network returns it)."""
    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], False, 0.0, 1e-5)

    def block(t, p, s):
        y = F.conv2d(bn(t, p + ".bn1"), sd[p + ".conv1.weight"], padding=1)
        y = F.prelu(bn(y, p + ".bn2"), sd[p + ".prelu.weight"])
        y = bn(F.conv2d(y, sd[p + ".conv2.weight"], stride=s, padding=1), p + ".bn3")
        if p + ".downsample.0.weight" in sd:
            t = bn(F.conv2d(t, sd[p + ".downsample.0.weight"], stride=s), p + ".downsample.1")
        return y + t

    h = F.prelu(bn(F.conv2d(x, sd["conv.0.weight"], padding=1), "conv.1"), sd["conv.2.weight"])
    pooled = []
    content = None
    for s in range(1, 5):
        j = 0
        while f"block_{s}.{j}.conv1.weight" in sd:
            h = block(h, f"block_{s}.{j}", 2 if j == 0 else 1)
            j += 1
        if s == 3:
            c = F.conv2d(bn(h, "content_layer.0"), sd["content_layer.1.weight"], padding=1)
            c = F.prelu(bn(c, "content_layer.2"), sd["content_layer.3.weight"])
            content = bn(F.conv2d(c, sd["content_layer.4.weight"], stride=stride, padding=1), "content_layer.5")
        pooled.append(F.adaptive_avg_pool2d(h, 3))
    flat = torch.cat(pooled, 1).view(x.shape[0], -1)
    n = len([k for k in sd if k.startswith("styles.") and k.endswith(".weight")])
    ws = torch.stack([F.linear(flat, sd[f"styles.{i}.weight"], sd[f"styles.{i}.bias"]) for i in range(n)], 1)
    return ws, content


def test_full_size_encoder_has_exactly_the_official_layout():
    enc = FeatureStyleEncoder(18, 512, 5, (512, 16, 16))
    own = {k: tuple(v.shape) for k, v in enc.state_dict().items() if k != "w_avg"}
    assert own == official_table()
    assert enc.styles[0].in_features == 8640 and enc.feature_stride == 2


# ---- generators --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sg2():
    return tiny_stylegan2(resolution=64, w_dim=32, max_channels=32)


def _sg2_ada(root):
    from invkit.adapters.stylegan2_formats import from_nvlabs

    ref = load_reference(root, "nvlabs_stylegan2_ada", "G")
    return from_nvlabs(ref["state_dict"], ref["config"]["init_kwargs"])


def _sg3_t(root):
    from invkit.adapters.stylegan3 import from_nvlabs

    ref = load_reference(root, "nvlabs_stylegan3_t", "G")
    return from_nvlabs(ref["state_dict"], ref["config"]["init_kwargs"])


def _check_official_load(G, k, tmp_path, input_size, expect_stride, seed=0):
    C, H, W = G.layer(k).shape
    table = official_table(G.num_ws, G.w_dim, C, SMALL["depths"], SMALL["widths"], SMALL["stem_width"])
    state = random_state(table, seed)
    path = tmp_path / "143_enc.pth"
    torch.save(state, path)
    enc = load_encoder(path, G, k=k, input_size=input_size)  # the official 256, scaled down
    assert enc.feature_stride == expect_stride
    assert (enc.num_ws, enc.w_dim, enc.k, enc.feature_shape) == (G.num_ws, G.w_dim, k, (C, H, W))
    assert enc.generator_fingerprint == G.fingerprint()
    torch.testing.assert_close(enc.w_avg, G.w_avg)
    x = torch.rand(2, 3, input_size, input_size) * 2 - 1
    ws, feats = enc.encode(x)
    ref_ws, ref_f = official_forward(state, x, expect_stride)
    # The official code adds the generator's average latent to the heads' output.
    torch.testing.assert_close(ws, ref_ws + G.w_avg, rtol=1e-4, atol=1e-4)
    if ref_f.shape[-2:] == (H, W):
        torch.testing.assert_close(feats, ref_f, rtol=1e-4, atol=1e-4)
    else:
        torch.testing.assert_close(feats, F.interpolate(ref_f, (H, W), mode="bilinear", align_corners=False,
                                                        antialias=ref_f.shape[-1] > W), rtol=1e-4, atol=1e-4)
    assert feats.shape == (2, C, H, W)
    # The codes drive the generator: both reconstructions run.
    with torch.no_grad():
        assert G.synthesize_from(k, feats, ws).shape == (2, G.img_channels, G.resolution, G.resolution)
    return enc


def test_official_layout_stylegan2_scaled_down(sg2, tmp_path):
    # 1024-style geometry scaled down: the stage-3 map is half the size of layer K, so the
    # branch is the official stride-2 one with no resize (64 px input -> 8x8 -> K=1 at 4x4).
    _check_official_load(sg2, 1, tmp_path, input_size=64, expect_stride=2)
    # K = 5 (the official index) at 16x16: stride 1 and an upsampling resize.
    _check_official_load(sg2, 5, tmp_path, input_size=64, expect_stride=1, seed=1)


def test_official_layout_stylegan2_ada(vectors_root, tmp_path):
    G = _sg2_ada(vectors_root)
    _check_official_load(G, 5, tmp_path, input_size=256, expect_stride=2)  # 32x32 -> 16x16


def test_official_layout_stylegan3(vectors_root, tmp_path):
    G = _sg3_t(vectors_root)
    assert G.num_ws == 16
    # A StyleGAN3 layer with margins (36x36 / 52x52): stride 1 and a resize from 32x32.
    _check_official_load(G, 3, tmp_path, input_size=64, expect_stride=1)


def test_official_file_that_does_not_fit_the_generator(sg2, tmp_path):
    table = official_table(sg2.num_ws + 2, sg2.w_dim, 32, SMALL["depths"], SMALL["widths"], SMALL["stem_width"])
    path = tmp_path / "143_enc.pth"
    torch.save(random_state(table), path)
    with pytest.raises(CheckpointError, match=r"143_enc.pth.*12 style heads.*num_ws = 10"):
        load_encoder(path, sg2, k=5)
    with pytest.raises(ValueError, match="needs the generator"):
        load_encoder(path)
    torch.save({"something": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a Feature-Style encoder"):
        load_encoder(path, sg2)
    with pytest.raises(FileNotFoundError, match="missing_enc.pth"):
        load_encoder(tmp_path / "missing_enc.pth", sg2)


def test_official_training_checkpoint_wrapper_is_accepted(sg2, tmp_path):
    table = official_table(sg2.num_ws, sg2.w_dim, 32, SMALL["depths"], SMALL["widths"], SMALL["stem_width"])
    state = random_state(table)
    path = tmp_path / "checkpoint.pth"
    torch.save({"n_epoch": 3, "enc_state_dict": state}, path)
    enc = load_encoder(path, sg2)
    assert enc.k == 5
    assert torch.equal(enc.styles[3].weight, state["styles.3.weight"])


# ---- shapes, resizing, our format ----------------------------------------------------------------
def test_encode_shapes_and_invert(sg2):
    enc = FeatureStyleEncoder.for_generator(sg2, 5, input_size=32, **SMALL)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    ws, feats = enc(x)
    assert ws.shape == (3, sg2.num_ws, sg2.w_dim) and feats.shape == (3, 32, 16, 16)
    enc.train()
    inv = enc.invert(x, ["a", "b", "c"])
    assert enc.training  # invert restores the mode
    assert isinstance(inv, Inversion) and inv.names == ["a", "b", "c"] and inv.k == 5
    assert inv.generator_fingerprint == sg2.fingerprint()
    enc.eval()
    with torch.no_grad():
        ws_eval, _ = enc(x)
    torch.testing.assert_close(inv.ws, ws_eval)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        enc(torch.zeros(1, 1, 64, 64))


def test_fresh_feature_branch_starts_at_the_statistics_of_layer_k(sg2):
    """F of a fresh encoder (train mode, as in training) has G_K(w)'s per-channel mean and std, not
    BatchNorm's default 0 and 1: with a unit-variance F, G(w, F) starts far from any activation G
    makes (the toy generator's layer 3 has std 0.12) and short runs end with G(w, F) worse than G(w)."""
    k = 3
    torch.manual_seed(0)
    # input 64: the branch's 8x8 output is layer 3's size (no resize, which would smooth F)
    enc = FeatureStyleEncoder.for_generator(sg2, k, input_size=64, **SMALL).train()
    with torch.no_grad():
        ws = sg2.mapping(torch.randn(256, sg2.z_dim, generator=torch.Generator().manual_seed(7)))
        target = sg2.features_at(k, ws)
        _, feats = enc(torch.rand(16, 3, 64, 64) * 2 - 1)
    t_mean, t_std = target.mean(dim=(0, 2, 3)), target.std(dim=(0, 2, 3))
    assert float(t_std.mean()) < 0.7 and float(t_mean.abs().mean()) > 0.1  # far from BatchNorm's (0, 1)
    torch.testing.assert_close(feats.mean(dim=(0, 2, 3)), t_mean, atol=0.1, rtol=0)
    torch.testing.assert_close(feats.std(dim=(0, 2, 3)), t_std, rtol=0.25, atol=0.02)
    state = torch.get_rng_state()
    enc.match_feature_statistics(sg2)
    assert torch.equal(torch.get_rng_state(), state)  # its own RNG: training streams are not disturbed


def test_input_resizing_follows_official_halvings():
    enc = FeatureStyleEncoder(4, 8, 1, (8, 4, 4), input_size=16, **SMALL)
    x = torch.rand(2, 3, 64, 64)
    halved = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear"), scale_factor=0.5, mode="bilinear")
    torch.testing.assert_close(enc.resize_input(x), halved)
    odd = torch.rand(1, 3, 40, 30)
    expected = F.interpolate(odd, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(enc.resize_input(odd), expected)
    same = torch.rand(1, 3, 16, 16)
    assert enc.resize_input(same) is same


def test_save_load_roundtrip_and_fingerprint_check(sg2, tmp_path):
    enc = FeatureStyleEncoder.for_generator(sg2, 3, input_size=32, **SMALL)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_encoder(enc, tmp_path / "enc.safetensors")
    loaded = load_encoder(path, sg2)
    assert loaded.config() == enc.config()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    enc.eval()
    with torch.no_grad():
        for a, b in zip(enc(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert load_encoder(path).k == 3  # the generator is optional for our own files
    other = tiny_stylegan2(resolution=64, w_dim=32, max_channels=32, seed=5)
    with pytest.raises(ValueError, match="trained for generator"):
        load_encoder(path, other)
    assert load_encoder(path, other, check_fingerprint=False).k == 3
    with pytest.raises(ValueError, match="layer K = 3, not 5"):
        load_encoder(path, sg2, k=5)
    inv_path = enc.invert(x).save(tmp_path / "codes.safetensors")
    with pytest.raises(CheckpointError, match="not an encoder"):
        load_encoder(inv_path, sg2)


def test_feature_branch_reads_stage_2_when_layer_k_is_finer_than_stage_3(sg2, tmp_path):
    # sg2 at 64 px: layer 5 is 16x16; with a 64 px input stage 3 is 8x8 and stage 2 is 16x16
    assert sg2.layer(5).shape[1:] == (16, 16)
    enc = FeatureStyleEncoder.for_generator(sg2, 5, input_size=64, **SMALL)
    assert enc.feature_stage == 2 and enc.feature_stride == 1
    assert enc.content_layer[0].num_features == SMALL["widths"][1]
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    enc.eval()
    with torch.no_grad():
        ws, feats = enc(x)
    assert feats.shape == (2, *sg2.layer(5).shape)
    # stage 3 stays the choice where it has the resolution (the official case), and can be forced
    assert FeatureStyleEncoder.for_generator(sg2, 3, input_size=64, **SMALL).feature_stage == 3
    forced = FeatureStyleEncoder.for_generator(sg2, 5, input_size=64, feature_stage=3, **SMALL)
    assert forced.content_layer[0].num_features == SMALL["widths"][2]
    path = save_encoder(enc, tmp_path / "enc.safetensors")
    assert load_encoder(path, sg2).feature_stage == 2
    with pytest.raises(ValueError, match="feature_stage"):
        FeatureStyleEncoder.for_generator(sg2, 5, input_size=64, feature_stage=1, **SMALL)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="w_avg"):
        FeatureStyleEncoder(4, 8, 1, (8, 4, 4), w_avg=torch.zeros(7), **SMALL)
    with pytest.raises(ValueError, match="feature_shape"):
        FeatureStyleEncoder(4, 8, 1, (8, 4), **SMALL)
    with pytest.raises(ValueError, match="input_size"):
        FeatureStyleEncoder(4, 8, 1, (8, 4, 4), input_size=2**20, **SMALL)  # a crafted file's claim
