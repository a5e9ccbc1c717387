"""Readers that turn every StyleGAN2 checkpoint layout into one :class:`StyleGAN2Generator`.

Layouts (``docs/stylegan2.md`` lists every key):

* rosinality ``Generator.state_dict()`` (``style.{i}.*``, ``input.input``, ``conv1.*``,
  ``convs.{j}.*``, ``to_rgb1.*``, ``to_rgbs.{k}.*``, ``noises.noise_{n}``), found as
  ``ckpt['g_ema']`` of ``convert_weight.py`` output (with ``latent_avg``) and of ``train.py``
  checkpoints (without ``latent_avg``; then ``w_avg`` is computed, see :func:`from_rosinality`),
  and as ``ckpt['state_dict']['decoder.*']`` of pSp checkpoints (with ``latent_avg``).
* NVlabs ``Generator.state_dict()`` (``mapping.fc{i}.*``, ``mapping.w_avg``,
  ``synthesis.b{R}.*``) plus the constructor kwargs, from stylegan2-ada-pytorch / stylegan3 network
  pickles (read code-free by :mod:`invkit.adapters.nvlabs`) or a torch file
  ``{'state_dict': ..., 'init_kwargs' | 'config': {'init_kwargs': ...}}``.

All sizes are read from tensor shapes. Every reader refuses what the network cannot represent
(conditional generators, non-skip architectures, other resampling filters) and reports unknown or
missing keys by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from invkit.io.checkpoint import CheckpointError, CheckpointFile

from .stylegan2_layers import blur_kernel
from .stylegan2_network import StyleGAN2Generator, from_config

#: Number of z and seed used for ``w_avg`` when a checkpoint has none (rosinality train.py).
W_AVG_SAMPLES = 10_000
W_AVG_SEED = 0


class StyleGAN2FormatError(CheckpointError):
    """A StyleGAN2 checkpoint whose contents do not fit the network; names file and key."""


# ---- helpers ---------------------------------------------------------------------------------
def _tensor(sd: Mapping[str, Any], key: str, source: str) -> torch.Tensor:
    if key not in sd:
        raise StyleGAN2FormatError(f"{source}: missing key {key!r}")
    value = sd[key]
    if not isinstance(value, torch.Tensor):
        raise StyleGAN2FormatError(f"{source}: {key!r} is a {type(value).__name__}, expected a tensor")
    return value.detach().to("cpu", torch.float32)


def _reshaped(t: torch.Tensor, shape: tuple[int, ...], key: str, source: str) -> torch.Tensor:
    if t.numel() != _numel(shape):
        raise StyleGAN2FormatError(f"{source}: {key!r} has shape {list(t.shape)}, expected {list(shape)}")
    return t.reshape(shape)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _check_leftovers(state_dict: dict[str, torch.Tensor], keys, used: set[str], fixed: re.Pattern,
                     kernel: torch.Tensor, source: str, hint: str = "") -> None:
    """Keys not turned into parameters must be the fixed resampling filters (checked against
    ``kernel``, since a different filter would be a different network); anything else is refused."""
    for key in keys:
        if fixed.fullmatch(key):
            _check_filter(state_dict, key, kernel, source)
            used.add(key)
    extra = [k for k in keys if k not in used]
    if extra:
        raise StyleGAN2FormatError(f"{source}: unexpected key {extra[0]!r}{hint}")


def _check_filter(sd: Mapping[str, Any], key: str, expected: torch.Tensor, source: str) -> None:
    """Resampling-filter buffers are fixed in the network; refuse files that use another one."""
    t = _tensor(sd, key, source)
    if t.shape != expected.shape or not torch.allclose(t, expected, atol=1e-6):
        raise StyleGAN2FormatError(
            f"{source}: {key!r} is not the standard [1, 3, 3, 1] resampling filter; "
            "other filters are not supported"
        )


def _indices(keys, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.fullmatch(k))})


def _finish(G: StyleGAN2Generator, params: dict[str, torch.Tensor], source: str) -> StyleGAN2Generator:
    """Copy ``params`` (canonical keys) into ``G``, insisting both sides match exactly."""
    expected = G.state_dict()
    missing = [k for k in expected if k not in params]
    if missing:
        raise StyleGAN2FormatError(f"{source}: no value for parameter {missing[0]!r}")
    for key, value in params.items():
        if key not in expected:
            raise StyleGAN2FormatError(f"{source}: internal key {key!r} has no parameter")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise StyleGAN2FormatError(
                f"{source}: {key!r} has shape {list(value.shape)}, the network needs "
                f"{list(expected[key].shape)} (inconsistent channel counts?)"
            )
    G.load_state_dict(params, strict=True)
    return G.eval().requires_grad_(False)


def _set_w_avg(G: StyleGAN2Generator, w_avg: torch.Tensor | None, source: str) -> None:
    if w_avg is None:
        G.w_avg.copy_(G.compute_w_avg(W_AVG_SAMPLES, W_AVG_SEED))
        G.w_avg_source = f"computed: mean of the mapping over {W_AVG_SAMPLES} z (seed {W_AVG_SEED})"
        return
    w_avg = w_avg.detach().to("cpu", torch.float32)
    if w_avg.ndim == 2:
        # pSp/e4e sometimes store the average repeated per w row: accept identical rows only.
        if not torch.allclose(w_avg, w_avg[:1].expand_as(w_avg)):
            raise StyleGAN2FormatError(f"{source}: latent_avg {list(w_avg.shape)} has differing rows")
        w_avg = w_avg[0]
    if tuple(w_avg.shape) != (G.w_dim,):
        raise StyleGAN2FormatError(f"{source}: latent_avg has shape {list(w_avg.shape)}, expected [{G.w_dim}]")
    G.w_avg.copy_(w_avg)
    G.w_avg_source = "stored"


# ---- rosinality ------------------------------------------------------------------------------
_ROSINALITY_IGNORED = re.compile(r"(convs\.\d+\.conv\.blur\.kernel|to_rgbs\.\d+\.upsample\.kernel)")


def from_rosinality(
    state_dict: Mapping[str, torch.Tensor],
    latent_avg: torch.Tensor | None = None,
    source: str = "rosinality state dict",
) -> StyleGAN2Generator:
    """Build a generator from a rosinality ``Generator.state_dict()``.

    Args:
        state_dict: keys as in rosinality ``model.py`` (no prefix).
        latent_avg: the truncation centre ``[w_dim]`` (``ckpt['latent_avg']``). When None (as in
            ``train.py`` checkpoints), ``w_avg`` is the mean of the mapping over 10 000 z drawn
            with seed 0 — deterministic, and within ~0.01 of the 4096-sample average rosinality's
            ``generate.py`` recomputes on every run.
        source: how to name the input in error messages (a file path).
    """
    keys = list(state_dict)
    mlp = _indices(keys, r"style\.(\d+)\.weight")
    if not mlp or "conv1.conv.weight" not in state_dict:
        raise StyleGAN2FormatError(f"{source}: not a rosinality StyleGAN2 state dict (no style.*/conv1.*)")
    if mlp != list(range(1, len(mlp) + 1)):
        raise StyleGAN2FormatError(f"{source}: mapping layers style.{{i}} are not numbered 1..n: {mlp}")
    n_up = len(_indices(keys, r"to_rgbs\.(\d+)\.conv\.weight"))
    resolution = 4 * 2 ** n_up
    n_convs = 1 + 2 * n_up

    fc = [_tensor(state_dict, f"style.{i}.weight", source) for i in mlp]
    mapping_dims = [fc[0].shape[1]] + [w.shape[0] for w in fc]
    w_dim = mapping_dims[-1]
    conv_w = [_tensor(state_dict, "conv1.conv.weight", source)] + [
        _tensor(state_dict, f"convs.{j}.conv.weight", source) for j in range(n_convs - 1)
    ]
    for j, w in enumerate(conv_w):
        if w.ndim != 5 or w.shape[0] != 1:
            name = "conv1" if j == 0 else f"convs.{j - 1}"
            raise StyleGAN2FormatError(f"{source}: {name}.conv.weight has shape {list(w.shape)}, expected [1, out, in, k, k]")
    channels = [conv_w[0].shape[2]] + [conv_w[j].shape[1] for j in range(1, n_convs, 2)]
    img_channels = _tensor(state_dict, "to_rgb1.conv.weight", source).shape[1]
    G = StyleGAN2Generator(
        z_dim=mapping_dims[0], w_dim=w_dim, resolution=resolution, channels=channels,
        img_channels=img_channels, mapping_dims=mapping_dims, mapping_lr_mul=0.01,
    )

    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return _tensor(state_dict, key, source)

    p: dict[str, torch.Tensor] = {}
    for i, idx in enumerate(mlp):
        p[f"mapping_net.fcs.{i}.weight"] = take(f"style.{idx}.weight")
        p[f"mapping_net.fcs.{i}.bias"] = take(f"style.{idx}.bias")
    p["const"] = take("input.input")[0]
    for j in range(n_convs):
        src = "conv1" if j == 0 else f"convs.{j - 1}"
        dst = f"convs.{j}"
        p[f"{dst}.weight"] = take(f"{src}.conv.weight")[0]
        p[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        p[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        p[f"{dst}.noise_strength"] = _reshaped(take(f"{src}.noise.weight"), (), f"{src}.noise.weight", source)
        p[f"{dst}.bias"] = take(f"{src}.activate.bias").reshape(-1)
        r = G.convs[j].resolution
        p[f"{dst}.noise_const"] = _reshaped(take(f"noises.noise_{j}"), (r, r), f"noises.noise_{j}", source)
    for b in range(n_up + 1):
        src = "to_rgb1" if b == 0 else f"to_rgbs.{b - 1}"
        p[f"torgbs.{b}.weight"] = take(f"{src}.conv.weight")[0]
        p[f"torgbs.{b}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        p[f"torgbs.{b}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        p[f"torgbs.{b}.bias"] = take(f"{src}.bias").reshape(-1)
    _check_leftovers(state_dict, keys, used, _ROSINALITY_IGNORED, blur_kernel(), source,
                     " (not a skip-architecture StyleGAN2?)")

    p["w_avg"] = torch.zeros(w_dim)
    G = _finish(G, p, source)
    _set_w_avg(G, latent_avg, source)
    return G


# ---- NVlabs ----------------------------------------------------------------------------------
_NVLABS_IGNORED = re.compile(r"synthesis\.b\d+(\.conv[01])?\.resample_filter")


def nvlabs_kwargs(init_kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(mapping_kwargs, synthesis_kwargs)`` from either constructor layout: stylegan2-ada's
    nested ``synthesis_kwargs`` or the stylegan3 repo's flat keywords."""
    kw = dict(init_kwargs)
    mapping = dict(kw.pop("mapping_kwargs", None) or {})
    synthesis = dict(kw.pop("synthesis_kwargs", None) or {})
    top = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"}
    for k, v in kw.items():
        if k not in top:
            synthesis.setdefault(k, v)
    return mapping, synthesis


def from_nvlabs(
    state_dict: Mapping[str, torch.Tensor],
    init_kwargs: Mapping[str, Any],
    source: str = "NVlabs state dict",
) -> StyleGAN2Generator:
    """Build a generator from an NVlabs StyleGAN2 ``Generator.state_dict()`` and its constructor
    kwargs (``_init_kwargs`` of a network pickle; nested ``synthesis_kwargs`` or flat).

    Refuses conditional generators (``c_dim > 0``), architectures other than ``'skip'`` and
    resampling filters other than [1, 3, 3, 1]. ``conv_clamp`` is kept; ``num_fp16_res`` is
    recorded (everything runs in float32).
    """
    mapping_kw, synthesis_kw = nvlabs_kwargs(init_kwargs)
    c_dim = int(init_kwargs.get("c_dim", 0) or 0)
    if c_dim > 0 or "mapping.embed.weight" in state_dict:
        raise StyleGAN2FormatError(f"{source}: conditional generator (c_dim={c_dim}) is not supported")
    arch = synthesis_kw.get("architecture", "skip")
    if arch != "skip":
        raise StyleGAN2FormatError(f"{source}: architecture {arch!r} is not supported (only 'skip')")
    taps = synthesis_kw.get("resample_filter", [1, 3, 3, 1])
    if [float(t) for t in taps] != [1.0, 3.0, 3.0, 1.0]:
        raise StyleGAN2FormatError(f"{source}: resample_filter {taps} is not supported (only [1, 3, 3, 1])")
    keys = list(state_dict)
    if "synthesis.b4.const" not in state_dict:
        raise StyleGAN2FormatError(f"{source}: not an NVlabs StyleGAN2 state dict (no 'synthesis.b4.const')")
    if any(k.startswith("synthesis.b") and ".skip." in k for k in keys):
        raise StyleGAN2FormatError(f"{source}: resnet architecture (synthesis.b*.skip.*) is not supported")

    n_fc = len(_indices(keys, r"mapping\.fc(\d+)\.weight"))
    if n_fc == 0:
        raise StyleGAN2FormatError(f"{source}: missing key 'mapping.fc0.weight'")
    fc = [_tensor(state_dict, f"mapping.fc{i}.weight", source) for i in range(n_fc)]
    mapping_dims = [fc[0].shape[1]] + [w.shape[0] for w in fc]
    resolutions = sorted(_indices(keys, r"synthesis\.b(\d+)\.torgb\.weight"))
    if not resolutions or resolutions != [4 * 2 ** i for i in range(len(resolutions))]:
        raise StyleGAN2FormatError(f"{source}: synthesis blocks {resolutions} are not 4, 8, 16, ...")
    resolution = resolutions[-1]
    declared = init_kwargs.get("img_resolution")
    if declared is not None and int(declared) != resolution:
        raise StyleGAN2FormatError(f"{source}: img_resolution={declared} but the weights end at {resolution} px")
    channels = [_tensor(state_dict, "synthesis.b4.const", source).shape[0]] + [
        _tensor(state_dict, f"synthesis.b{r}.conv0.weight", source).shape[0] for r in resolutions[1:]
    ]
    img_channels = _tensor(state_dict, "synthesis.b4.torgb.weight", source).shape[0]
    conv_clamp = synthesis_kw.get("conv_clamp")
    G = StyleGAN2Generator(
        z_dim=mapping_dims[0], w_dim=mapping_dims[-1], resolution=resolution, channels=channels,
        img_channels=img_channels, mapping_dims=mapping_dims,
        mapping_lr_mul=float(mapping_kw.get("lr_multiplier", 0.01)),
        conv_clamp=None if conv_clamp is None else float(conv_clamp),
        num_fp16_res=int(synthesis_kw.get("num_fp16_res", 0) or 0),
    )

    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        return _tensor(state_dict, key, source)

    p: dict[str, torch.Tensor] = {}
    for i in range(n_fc):
        p[f"mapping_net.fcs.{i}.weight"] = take(f"mapping.fc{i}.weight")
        p[f"mapping_net.fcs.{i}.bias"] = take(f"mapping.fc{i}.bias")
    p["w_avg"] = take("mapping.w_avg")
    p["const"] = take("synthesis.b4.const")
    layer_src = ["synthesis.b4.conv1"]
    for r in resolutions[1:]:
        layer_src += [f"synthesis.b{r}.conv0", f"synthesis.b{r}.conv1"]
    for j, src in enumerate(layer_src):
        for name in ("weight", "bias", "noise_strength", "noise_const", "affine.weight", "affine.bias"):
            p[f"convs.{j}.{name}"] = take(f"{src}.{name}")
    for b, r in enumerate(resolutions):
        for name in ("weight", "bias", "affine.weight", "affine.bias"):
            p[f"torgbs.{b}.{name}"] = take(f"synthesis.b{r}.torgb.{name}")
    _check_leftovers(state_dict, keys, used, _NVLABS_IGNORED, blur_kernel(gain=1.0), source)
    G = _finish(G, p, source)
    G.w_avg_source = "stored"
    return G


# ---- whole checkpoint files ------------------------------------------------------------------
def _strip(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def classify(obj: Any) -> str | None:
    """Which layout a ``torch.load``-ed object has: ``"rosinality"`` (``{'g_ema': ...}``),
    ``"psp"`` (``{'state_dict': {'decoder.*': ...}}``), ``"rosinality-state-dict"``,
    ``"nvlabs"`` (``{'state_dict': {'synthesis.b4.const': ...}, 'init_kwargs' | 'config'}``),
    ``"rosinality-wrapped"`` (``{'state_dict': rosinality keys}``) or None."""
    if not isinstance(obj, Mapping):
        return None
    if isinstance(obj.get("g_ema"), Mapping) and "style.1.weight" in obj["g_ema"]:
        return "rosinality"
    sd = obj.get("state_dict")
    if isinstance(sd, Mapping):
        if "decoder.style.1.weight" in sd:
            return "psp"
        if "synthesis.b4.const" in sd:
            return "nvlabs"
        if "style.1.weight" in sd and "conv1.conv.weight" in sd:
            return "rosinality-wrapped"
    if "style.1.weight" in obj and "conv1.conv.weight" in obj:
        return "rosinality-state-dict"
    return None


def identify(checkpoint: CheckpointFile) -> str | None:
    """``"stylegan2"`` for torch files in one of the layouts of :func:`classify`, else None.
    (NVlabs pickles are identified by the NVlabs reader's own hook.)"""
    if checkpoint.format not in ("torch-zip", "torch-legacy"):
        return None
    try:
        obj = checkpoint.torch_object()
    except CheckpointError:
        return None
    return "stylegan2" if classify(obj) is not None else None


def load_checkpoint(checkpoint: CheckpointFile) -> StyleGAN2Generator:
    """Read any supported StyleGAN2 file (see the module docstring) into a generator."""
    source = str(checkpoint.path)
    if checkpoint.format == "pickle":
        from .nvlabs import read_network

        net = read_network(checkpoint)
        family = getattr(net, "family", "stylegan2")
        if net.class_name != "Generator" or family != "stylegan2":
            raise StyleGAN2FormatError(
                f"{source}: holds {net.module_name}.{net.class_name} ({family}), not a StyleGAN2 generator"
            )
        return from_nvlabs(net.state_dict, net.init_kwargs, source)
    meta = checkpoint.invkit_meta()
    if meta is not None and meta.get("kind") == "generator" and meta.get("adapter") == "stylegan2":
        from invkit.io import tensorfile
        from invkit.loading import rebuild_checked

        tensors, meta = tensorfile.load(checkpoint.path, kind="generator")
        return rebuild_checked(from_config, meta, tensors, checkpoint.path)
    if checkpoint.format not in ("torch-zip", "torch-legacy"):
        raise StyleGAN2FormatError(f"{source}: not a StyleGAN2 checkpoint (file format: {checkpoint.format})")
    obj = checkpoint.torch_object()
    kind = classify(obj)
    if kind == "rosinality":
        return from_rosinality(obj["g_ema"], obj.get("latent_avg"), source)
    if kind == "psp":
        return from_rosinality(_strip(obj["state_dict"], "decoder."), obj.get("latent_avg"), source)
    if kind == "rosinality-wrapped":
        return from_rosinality(obj["state_dict"], obj.get("latent_avg"), source)
    if kind == "rosinality-state-dict":
        return from_rosinality(obj, None, source)
    if kind == "nvlabs":
        init_kwargs = obj.get("init_kwargs")
        if init_kwargs is None and isinstance(obj.get("config"), Mapping):
            init_kwargs = obj["config"].get("init_kwargs")
        if not isinstance(init_kwargs, Mapping):
            raise StyleGAN2FormatError(f"{source}: NVlabs state dict without 'init_kwargs'")
        return from_nvlabs(obj["state_dict"], init_kwargs, source)
    what = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise StyleGAN2FormatError(
        f"{source}: not a StyleGAN2 checkpoint (expected 'g_ema', pSp 'state_dict' with 'decoder.*', "
        f"or an NVlabs state dict; found {what})"
    )


# ---- writers (the inverse maps; for handing a model to rosinality/pSp/NVlabs code) ----------
def to_rosinality(G: StyleGAN2Generator) -> dict[str, torch.Tensor]:
    """``G`` as a rosinality ``Generator.state_dict()`` (same keys, shapes and order as
    rosinality ``model.py``, blur/upsample kernels included). ``G.w_avg`` is not part of it: store
    it beside as ``latent_avg``. Only generators with ``mapping_lr_mul`` 0.01, ``z_dim == w_dim``
    and equal mapping widths have a rosinality equivalent."""
    if G.config["mapping_lr_mul"] != 0.01 or len(set(G.config["mapping_dims"])) != 1:
        raise ValueError("rosinality's Generator needs z_dim == w_dim == every mapping width and lr_mlp 0.01")
    sd = {k: v.detach().cpu() for k, v in G.state_dict().items()}
    kernel = blur_kernel()
    out: dict[str, torch.Tensor] = {}
    for i in range(len(G.mapping_net.fcs)):
        out[f"style.{i + 1}.weight"] = sd[f"mapping_net.fcs.{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping_net.fcs.{i}.bias"]
    out["input.input"] = sd["const"][None]

    def conv(dst: str, j: int) -> None:
        out[f"{dst}.conv.weight"] = sd[f"convs.{j}.weight"][None]
        if G.convs[j].up:
            out[f"{dst}.conv.blur.kernel"] = kernel.clone()
        out[f"{dst}.conv.modulation.weight"] = sd[f"convs.{j}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"convs.{j}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"convs.{j}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"convs.{j}.bias"]

    def torgb(dst: str, b: int) -> None:
        out[f"{dst}.bias"] = sd[f"torgbs.{b}.bias"].reshape(1, -1, 1, 1)
        if b > 0:
            out[f"{dst}.upsample.kernel"] = kernel.clone()
        out[f"{dst}.conv.weight"] = sd[f"torgbs.{b}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"torgbs.{b}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"torgbs.{b}.affine.bias"]

    conv("conv1", 0)
    torgb("to_rgb1", 0)
    for j in range(1, len(G.convs)):
        conv(f"convs.{j - 1}", j)
    for b in range(1, len(G.torgbs)):
        torgb(f"to_rgbs.{b - 1}", b)
    for j in range(len(G.convs)):
        out[f"noises.noise_{j}"] = sd[f"convs.{j}.noise_const"][None, None]
    return out


def to_nvlabs(G: StyleGAN2Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``G`` as an NVlabs stylegan2-ada ``Generator`` ``(state_dict, init_kwargs)`` (nested
    ``synthesis_kwargs`` layout). ``channel_base``/``channel_max`` are the values that
    reproduce ``G.channels`` with NVlabs' formula when such values exist (the official code
    derives widths from them; invkit reads the shapes)."""
    sd = {k: v.detach().cpu() for k, v in G.state_dict().items()}
    filt = blur_kernel(gain=1.0)
    out: dict[str, torch.Tensor] = {}
    for b, _ in enumerate(G.torgbs):
        r = 4 * 2 ** b
        blk = f"synthesis.b{r}"
        if b == 0:
            out[f"{blk}.const"] = sd["const"]
        out[f"{blk}.resample_filter"] = filt.clone()
        layers = [("conv1", 0)] if b == 0 else [("conv0", 2 * b - 1), ("conv1", 2 * b)]
        for name, j in layers:
            for p in ("weight", "noise_strength", "bias"):
                out[f"{blk}.{name}.{p}"] = sd[f"convs.{j}.{p}"]
            out[f"{blk}.{name}.resample_filter"] = filt.clone()
            for p in ("noise_const", "affine.weight", "affine.bias"):
                out[f"{blk}.{name}.{p}"] = sd[f"convs.{j}.{p}"]
        for p in ("weight", "bias", "affine.weight", "affine.bias"):
            out[f"{blk}.torgb.{p}"] = sd[f"torgbs.{b}.{p}"]
    out["mapping.w_avg"] = sd["w_avg"]
    for i in range(len(G.mapping_net.fcs)):
        out[f"mapping.fc{i}.weight"] = sd[f"mapping_net.fcs.{i}.weight"]
        out[f"mapping.fc{i}.bias"] = sd[f"mapping_net.fcs.{i}.bias"]
    cfg = G.config
    dims = cfg["mapping_dims"]
    channel_max = max(cfg["channels"])
    channel_base = cfg["channels"][-1] * cfg["resolution"]
    init_kwargs = {
        "z_dim": cfg["z_dim"], "w_dim": cfg["w_dim"], "c_dim": 0, "img_resolution": cfg["resolution"],
        "img_channels": cfg["img_channels"],
        "mapping_kwargs": {"num_layers": len(dims) - 1, "layer_features": dims[1] if len(dims) > 2 else None,
                           "lr_multiplier": cfg["mapping_lr_mul"]},
        "synthesis_kwargs": {"channel_base": channel_base, "channel_max": channel_max,
                             "num_fp16_res": cfg["num_fp16_res"], "conv_clamp": cfg["conv_clamp"]},
    }
    return out, init_kwargs
