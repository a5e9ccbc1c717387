"""Legacy TensorFlow StyleGAN2 pickles, converted to the NVlabs PyTorch layout without TensorFlow.

The original StyleGAN2 release (``stylegan2-ffhq-config-f.pkl``, ``stylegan2-car-config-f.pkl``,
...) pickles a tuple ``(G, D, Gs)`` of ``dnnlib.tflib.network.Network`` objects. Each one's
pickled state is a plain dict::

    {"version": 4, "name": "G_main", "static_kwargs": {...}, "components": {"mapping": Network,
     "synthesis": Network}, "build_module_src": "<python source>", "build_func_name": "...",
     "variables": [("dlatent_avg", ndarray), ...]}

:class:`TFNetworkRecord` takes the place of ``Network`` while unpickling (through the NVlabs
reader's allow-list), so the state is kept as data and ``build_module_src`` is never run.
:func:`convert_generator` then maps the ``Gs`` variables onto the state dict and constructor
kwargs of NVlabs' ``training.networks.Generator`` (stylegan2-ada-pytorch layout, nested
``synthesis_kwargs``), by the rules NVlabs' own ``legacy.py`` applies:

============================================  =====================================================
NVlabs key                                    TensorFlow variable (``R`` = resolution of the block)
============================================  =====================================================
``mapping.fc{i}.weight`` / ``.bias``          ``mapping/Dense{i}/weight`` transposed / ``bias``
``mapping.embed.weight`` / ``.bias``          ``mapping/LabelEmbed/weight`` transposed / ``bias``
``mapping.w_avg``                             ``dlatent_avg``
``synthesis.b4.const``                        ``synthesis/4x4/Const/const[0]``
``synthesis.b4.conv1.*``                      ``synthesis/4x4/Conv/*``
``synthesis.bR.conv0.weight``                 ``synthesis/RxR/Conv0_up/weight[::-1, ::-1]``
                                              ``.transpose(3, 2, 0, 1)`` (spatially flipped: TF
                                              runs the upsampling conv as a transposed conv)
``synthesis.bR.conv1.weight``, ``torgb``      ``.../Conv1/weight``, ``.../ToRGB/weight``,
                                              ``.transpose(3, 2, 0, 1)``
``*.affine.weight`` / ``*.affine.bias``       ``mod_weight`` transposed / ``mod_bias + 1`` (TF adds
                                              the 1 at run time, NVlabs stores it in the bias)
``*.noise_strength``, ``*.bias``              same name
``synthesis.b4.conv1.noise_const``            ``synthesis/noise0[0, 0]``
``synthesis.bR.conv0/conv1.noise_const``      ``synthesis/noise{2·log2(R)−5 / 2·log2(R)−4}[0, 0]``
``synthesis.bR.skip.weight`` (resnet)         ``.../Skip/weight[::-1, ::-1].transpose(3, 2, 0, 1)``
``*.resample_filter`` (buffers)               ``outer(k, k) / sum`` of ``resample_kernel``
============================================  =====================================================

and ``channel_base = 2 · fmap_base`` (TF counts feature maps per stage, NVlabs per pixel).
Both conventions store equalised-lr weights the same way (``randn / lr_mul``), so values are
copied, never rescaled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from invkit.io.checkpoint import CheckpointError
from invkit.io.safe_pickle import Record

#: ``dnnlib.tflib.network.Network.__getstate__`` versions with the StyleGAN2 layout.
MIN_VERSION = 4

#: static kwargs that only affect how TF ran the graph (truncation, mixing, training), not the
#: weights or the architecture.
_RUNTIME_KWARGS = frozenset(
    [
        "truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val",
        "style_mixing_prob", "structure", "is_training", "is_validation", "is_template_graph",
        "return_dlatents", "randomize_noise", "dtype", "components", "mapping_func",
        "synthesis_func", "fused_modconv", "normalize_latents", "mapping_dtype",
    ]
)

#: static kwargs that must keep their defaults, because the NVlabs layout cannot express others.
_FIXED_KWARGS = {"fmap_decay": 1.0, "fmap_min": 1, "use_pixel_norm": True}


class TFNetworkRecord(Record):
    """Plain-data stand-in for ``dnnlib.tflib.network.Network`` while unpickling.

    Attributes:
        state: the pickled state dict (see the module docstring); set by ``BUILD``.
    """

    state: dict[str, Any]

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"TF network state is a {type(state).__name__}, expected a dict")
        self.state = state

    @property
    def name(self) -> str:
        return str(self.state.get("name", "?"))

    @property
    def version(self) -> int:
        return int(self.state.get("version", 0))

    @property
    def static_kwargs(self) -> dict[str, Any]:
        return dict(self.state.get("static_kwargs") or {})

    @property
    def components(self) -> dict[str, TFNetworkRecord]:
        return dict(self.state.get("components") or {})

    def own_variables(self) -> Iterable[tuple[str, Any]]:
        variables = self.state.get("variables") or []
        return variables.items() if isinstance(variables, dict) else variables


def collect_variables(net: TFNetworkRecord, source: str) -> dict[str, np.ndarray]:
    """All variables of ``net`` and its components, named ``component/.../variable``."""
    out: dict[str, np.ndarray] = {}

    def visit(prefix: str, node: Any) -> None:
        if not isinstance(node, TFNetworkRecord) or not hasattr(node, "state"):
            raise CheckpointError(f"{source}: a TF network component is not a Network record")
        for item in node.own_variables():
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
                raise CheckpointError(f"{source}: malformed variable entry in TF network {node.name!r}")
            name, value = item
            if not isinstance(value, (np.ndarray, np.generic)):
                raise CheckpointError(f"{source}: TF variable {prefix + name!r} is not a numpy array")
            out[prefix + name] = np.asarray(value)
        for comp_name, comp in node.components.items():
            visit(f"{prefix}{comp_name}/", comp)

    visit("", net)
    return out


def _plain_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain_value(v) for k, v in value.items()}
    return value


def _kwargs(static: dict[str, Any], source: str) -> dict[str, Any]:
    """NVlabs ``Generator`` kwargs (stylegan2-ada layout) from the TF ``Gs`` static kwargs."""
    static = {k: _plain_value(v) for k, v in static.items()}
    used: set[str] = set()

    def get(name: str, default: Any, alias: str | None = None) -> Any:
        used.add(name)
        if alias is not None:
            used.add(alias)
            if static.get(name) is None and static.get(alias) is not None:
                return static[alias]
        value = static.get(name)
        return default if value is None else value

    for name, default in _FIXED_KWARGS.items():
        used.add(name)
        if name in static and static[name] != default:
            raise CheckpointError(
                f"{source}: TF kwarg {name}={static[name]!r} is not supported (only {default!r})"
            )
    fmap_base = get("fmap_base", 16384)
    kwargs = {
        "z_dim": get("latent_size", 512),
        "c_dim": get("label_size", 0),
        "w_dim": get("dlatent_size", 512),
        "img_resolution": get("resolution", 1024),
        "img_channels": get("num_channels", 3),
        "mapping_kwargs": {
            "num_layers": get("mapping_layers", 8),
            "embed_features": get("label_fmaps", None),
            "layer_features": get("mapping_fmaps", None),
            "activation": get("mapping_nonlinearity", "lrelu"),
            "lr_multiplier": get("mapping_lrmul", 0.01),
            "w_avg_beta": get("w_avg_beta", 0.995, alias="dlatent_avg_beta"),
        },
        "synthesis_kwargs": {
            "channel_base": 2 * int(fmap_base),
            "channel_max": get("fmap_max", 512),
            "num_fp16_res": get("num_fp16_res", 0),
            "conv_clamp": get("conv_clamp", None),
            "architecture": get("architecture", "skip"),
            "resample_filter": list(get("resample_kernel", [1, 3, 3, 1])),
            "use_noise": bool(get("use_noise", True)),
            "activation": get("nonlinearity", "lrelu"),
        },
    }
    unknown = sorted(set(static) - used - _RUNTIME_KWARGS)
    if unknown:
        raise CheckpointError(f"{source}: unknown TF StyleGAN2 kwarg {unknown[0]!r}; cannot convert safely")
    if kwargs["synthesis_kwargs"]["architecture"] not in ("skip", "resnet", "orig"):
        raise CheckpointError(
            f"{source}: unknown TF architecture {kwargs['synthesis_kwargs']['architecture']!r}"
        )
    return kwargs


def resample_filter(kernel: list[float]) -> torch.Tensor:
    """The NVlabs 2-D FIR buffer for a 1-D ``kernel``: ``outer(k, k) / sum``, ``[k, k]``."""
    k = torch.as_tensor(kernel, dtype=torch.float32)
    f = torch.outer(k, k)
    return f / f.sum()


def convert_generator(gs: TFNetworkRecord, source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The NVlabs ``training.networks.Generator`` state dict and kwargs for a TF ``Gs``.

    Args:
        gs: the generator record (the third element of a TF ``(G, D, Gs)`` pickle).
        source: the file, for error messages.

    Returns:
        ``(state_dict, init_kwargs)``: float32 tensors in ``Generator.state_dict()`` order
        (``synthesis.b4 ... bR`` then ``mapping``), and kwargs with nested ``mapping_kwargs`` /
        ``synthesis_kwargs``.
    """
    if gs.version < MIN_VERSION:
        raise CheckpointError(
            f"{source}: TF network pickle version {gs.version} is too old (StyleGAN2 needs >= {MIN_VERSION})"
        )
    kwargs = _kwargs(gs.static_kwargs, source)
    tf = collect_variables(gs, source)
    syn = kwargs["synthesis_kwargs"]
    resolution = int(kwargs["img_resolution"])
    log2 = int(round(math.log2(resolution)))
    if resolution < 4 or 2**log2 != resolution:
        raise CheckpointError(f"{source}: TF resolution {resolution} is not a power of two >= 4")

    # 'orig' networks name their output layers by level of detail instead of resolution.
    for name in list(tf):
        match = re.fullmatch(r"synthesis/ToRGB_lod(\d+)/(.*)", name)
        if match:
            r = resolution // 2 ** int(match.group(1))
            tf[f"synthesis/{r}x{r}/ToRGB/{match.group(2)}"] = tf[name]

    def var(name: str) -> np.ndarray:
        try:
            return tf[name]
        except KeyError:
            raise CheckpointError(
                f"{source}: TF generator has no variable {name!r}; not a StyleGAN2 network?"
            ) from None

    def t(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32).copy())

    def conv_weight(name: str, flip: bool = False) -> torch.Tensor:
        w = var(name)  # [kh, kw, in, out]
        if w.ndim != 4:
            raise CheckpointError(f"{source}: TF variable {name!r} has shape {list(w.shape)}, expected 4-D")
        if flip:
            w = w[::-1, ::-1]
        return t(w.transpose(3, 2, 0, 1))

    fir = resample_filter(syn["resample_filter"])
    use_noise = syn["use_noise"]
    sd: dict[str, torch.Tensor] = {}

    def layer(prefix: str, scope: str, flip: bool, noise_index: int) -> None:
        sd[f"{prefix}.weight"] = conv_weight(f"{scope}/weight", flip)
        if use_noise:
            sd[f"{prefix}.noise_strength"] = t(var(f"{scope}/noise_strength")).reshape([])
        sd[f"{prefix}.bias"] = t(var(f"{scope}/bias"))
        sd[f"{prefix}.resample_filter"] = fir.clone()
        if use_noise:
            noise = var(f"synthesis/noise{noise_index}")
            sd[f"{prefix}.noise_const"] = t(noise.reshape(noise.shape[-2:]))
        affine(prefix, scope)

    def affine(prefix: str, scope: str) -> None:
        sd[f"{prefix}.affine.weight"] = t(var(f"{scope}/mod_weight").T)
        sd[f"{prefix}.affine.bias"] = t(var(f"{scope}/mod_bias") + 1)

    for res_log2 in range(2, log2 + 1):
        r = 2**res_log2
        block, scope = f"synthesis.b{r}", f"synthesis/{r}x{r}"
        if r == 4:
            sd[f"{block}.const"] = t(var(f"{scope}/Const/const")[0])
        sd[f"{block}.resample_filter"] = fir.clone()
        if r == 4:
            layer(f"{block}.conv1", f"{scope}/Conv", False, 0)
        else:
            layer(f"{block}.conv0", f"{scope}/Conv0_up", True, 2 * res_log2 - 5)
            layer(f"{block}.conv1", f"{scope}/Conv1", False, 2 * res_log2 - 4)
        if r == resolution or syn["architecture"] == "skip":
            sd[f"{block}.torgb.weight"] = conv_weight(f"{scope}/ToRGB/weight")
            sd[f"{block}.torgb.bias"] = t(var(f"{scope}/ToRGB/bias"))
            affine(f"{block}.torgb", f"{scope}/ToRGB")
        if r > 4 and syn["architecture"] == "resnet":
            sd[f"{block}.skip.weight"] = conv_weight(f"{scope}/Skip/weight", flip=True)
            sd[f"{block}.skip.resample_filter"] = fir.clone()

    sd["mapping.w_avg"] = t(var("dlatent_avg"))
    if kwargs["c_dim"]:
        sd["mapping.embed.weight"] = t(var("mapping/LabelEmbed/weight").T)
        sd["mapping.embed.bias"] = t(var("mapping/LabelEmbed/bias"))
    for i in range(int(kwargs["mapping_kwargs"]["num_layers"])):
        sd[f"mapping.fc{i}.weight"] = t(var(f"mapping/Dense{i}/weight").T)
        sd[f"mapping.fc{i}.bias"] = t(var(f"mapping/Dense{i}/bias"))

    _check_sizes(sd, kwargs, source)
    return sd, kwargs


def _check_sizes(sd: dict[str, torch.Tensor], kwargs: dict[str, Any], source: str) -> None:
    """The kwargs must agree with the tensors (a mismatch means a mislabelled pickle)."""
    w_dim = sd["mapping.w_avg"].shape[0]
    if w_dim != kwargs["w_dim"]:
        raise CheckpointError(f"{source}: dlatent_size {kwargs['w_dim']} but dlatent_avg has {w_dim} values")
    if not kwargs["c_dim"] and sd["mapping.fc0.weight"].shape[1] != kwargs["z_dim"]:
        raise CheckpointError(
            f"{source}: latent_size {kwargs['z_dim']} but mapping/Dense0 reads "
            f"{sd['mapping.fc0.weight'].shape[1]} values"
        )
    res = kwargs["img_resolution"]
    out = sd[f"synthesis.b{res}.torgb.weight"].shape[0]
    if out != kwargs["img_channels"]:
        raise CheckpointError(f"{source}: num_channels {kwargs['img_channels']} but ToRGB writes {out}")
