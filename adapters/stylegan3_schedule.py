"""StyleGAN3 configuration: the official constructor kwargs, normalised (:func:`normalize_kwargs`),
and the paper's layer schedule computed from them (:func:`synthesis_schedule`: sampling rates,
cutoffs, transition bands, channel counts, map sizes, paddings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Synthesis kwargs the official ``SynthesisNetwork`` / ``SynthesisLayer`` accept, with their
#: defaults. ``num_fp16_res`` only selects float16 on CUDA in the official code and is ignored
#: (everything runs in float32); ``magnitude_ema_beta`` only matters for training.
SYNTHESIS_DEFAULTS: dict[str, Any] = {
    "channel_base": 32768,
    "channel_max": 512,
    "num_layers": 14,
    "num_critical": 2,
    "first_cutoff": 2,
    "first_stopband": 2**2.1,
    "last_stopband_rel": 2**0.3,
    "margin_size": 10,
    "output_scale": 0.25,
    "num_fp16_res": 4,
    "conv_kernel": 3,
    "filter_size": 6,
    "lrelu_upsampling": 2,
    "use_radial_filters": False,
    "conv_clamp": 256,
    "magnitude_ema_beta": 0.999,
}
MAPPING_DEFAULTS: dict[str, Any] = {"num_layers": 2, "lr_multiplier": 0.01, "w_avg_beta": 0.998}
GENERATOR_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


# --------------------------------------------------------------------------------------------
# Configuration and the layer schedule
# --------------------------------------------------------------------------------------------
def normalize_kwargs(init_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Official ``Generator`` kwargs in either layout -> one flat, complete, JSON-able dict.

    The stylegan3 repository passes the synthesis kwargs flat (``channel_base=...`` next to
    ``z_dim``), stylegan2-ada-style configs nest them in ``synthesis_kwargs``; both are accepted.
    Missing entries get the official defaults; unknown ones are refused, because silently
    ignoring an architecture switch would build a different network.
    """
    kwargs = dict(init_kwargs)
    nested = kwargs.pop("synthesis_kwargs", None) or {}
    mapping_kwargs = dict(kwargs.pop("mapping_kwargs", None) or {})
    for key in GENERATOR_KEYS:
        if key not in kwargs and key != "c_dim":
            raise ValueError(f"StyleGAN3 init_kwargs lack {key!r}")
    out: dict[str, Any] = {
        "z_dim": int(kwargs.pop("z_dim")),
        "c_dim": int(kwargs.pop("c_dim", 0) or 0),
        "w_dim": int(kwargs.pop("w_dim")),
        "img_resolution": int(kwargs.pop("img_resolution")),
        "img_channels": int(kwargs.pop("img_channels")),
    }
    synthesis = {**kwargs, **dict(nested)}
    unknown = sorted(set(synthesis) - set(SYNTHESIS_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown StyleGAN3 synthesis kwargs {unknown}")
    unknown = sorted(set(mapping_kwargs) - set(MAPPING_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown StyleGAN3 mapping_kwargs {unknown}")
    for key, default in SYNTHESIS_DEFAULTS.items():
        value = synthesis.get(key, default)
        if key == "conv_clamp":
            out[key] = None if value is None else float(value)
        elif isinstance(default, bool):
            out[key] = bool(value)
        elif isinstance(default, int):
            out[key] = int(value)
        else:
            out[key] = float(value)
    out["mapping_kwargs"] = {
        "num_layers": int(mapping_kwargs.get("num_layers", MAPPING_DEFAULTS["num_layers"])),
        "lr_multiplier": float(mapping_kwargs.get("lr_multiplier", MAPPING_DEFAULTS["lr_multiplier"])),
        "w_avg_beta": float(mapping_kwargs.get("w_avg_beta", MAPPING_DEFAULTS["w_avg_beta"])),
    }
    if out["c_dim"] != 0:
        raise NotImplementedError(
            f"conditional StyleGAN3 generators (c_dim={out['c_dim']}) are not supported; "
            "every released StyleGAN3 model is unconditional"
        )
    return out


@dataclass(frozen=True)
class InputSpec:
    """The Fourier-feature input: ``channels`` features on a ``size x size`` grid sampled at
    ``sampling_rate`` samples per unit, band-limited to ``bandwidth`` (= the first cutoff)."""

    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


@dataclass(frozen=True)
class LayerSpec:
    """Every size of one synthesis layer ``L{index}`` (all derived from the kwargs).

    ``in/out_size`` include margins; ``up/down_factor`` bracket the temporary sampling rate at
    which the leaky ReLU runs; ``padding`` is ``(left, right, top, bottom)`` of the up-sampled map.
    """

    index: int
    name: str
    is_torgb: bool
    is_critically_sampled: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    tmp_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]


def synthesis_schedule(config: Mapping[str, Any]) -> tuple[InputSpec, list[LayerSpec]]:
    """The per-layer sampling rates, cutoffs, sizes, channels and filter sizes (paper, Sec. 3.3
    and Appendix C), for a :func:`normalize_kwargs` config.

    Cutoffs grow geometrically from ``first_cutoff`` to ``img_resolution / 2`` over the first
    ``num_layers - num_critical`` layers and stay there; stopbands likewise, from
    ``first_stopband`` to ``last_cutoff * last_stopband_rel``; the sampling rate is the smallest
    power of two >= twice the stopband (capped at the resolution); the transition half-width
    fills the gap between cutoff and ``max(stopband, rate / 2)``. Channels are
    ``channel_base / 2 / cutoff`` capped at ``channel_max``. numpy float64 is used throughout
    so that the values (and hence the designed filters) equal the official ones bit for bit.
    """
    res = config["img_resolution"]
    num_layers = config["num_layers"]
    num_critical = config["num_critical"]
    last_cutoff = res / 2
    last_stopband = last_cutoff * config["last_stopband_rel"]
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = config["first_cutoff"] * (last_cutoff / config["first_cutoff"]) ** exponents
    stopbands = config["first_stopband"] * (last_stopband / config["first_stopband"]) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + config["margin_size"] * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((config["channel_base"] / 2) / cutoffs, config["channel_max"]))
    channels[-1] = config["img_channels"]

    spec_in = InputSpec(int(channels[0]), int(sizes[0]), float(sampling_rates[0]), float(cutoffs[0]))
    layers = []
    filter_size = config["filter_size"]
    for idx in range(num_layers + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == num_layers
        is_critical = idx >= num_layers - num_critical
        in_rate, out_rate = int(sampling_rates[prev]), int(sampling_rates[idx])
        tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else config["lrelu_upsampling"])
        up = int(np.rint(tmp_rate / in_rate))
        down = int(np.rint(tmp_rate / out_rate))
        if in_rate * up != tmp_rate or out_rate * down != tmp_rate:
            raise ValueError(f"layer L{idx}: sampling rates {in_rate} -> {out_rate} are not integer ratios")
        up_taps = filter_size * up if up > 1 and not is_torgb else 1
        down_taps = filter_size * down if down > 1 and not is_torgb else 1
        kernel = 1 if is_torgb else config["conv_kernel"]
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        # Total padding so that the output has out_size pixels: the size before decimation,
        # minus the up-sampled conv output, plus what the two FIR filters eat.
        pad_total = (out_size - 1) * down + 1
        pad_total -= (in_size + kernel - 1) * up
        pad_total += up_taps + down_taps - 2
        # Shift by up/2 so that samples sit at pixel centres (the symmetric interpretation of
        # the paper's Appendix C.3).
        pad_lo = (pad_total + up) // 2
        pad_hi = pad_total - pad_lo
        out_channels = int(channels[idx])
        layers.append(
            LayerSpec(
                index=idx,
                name=f"L{idx}_{out_size}_{out_channels}",
                is_torgb=is_torgb,
                is_critically_sampled=is_critical,
                in_channels=int(channels[prev]),
                out_channels=out_channels,
                in_size=in_size,
                out_size=out_size,
                in_sampling_rate=in_rate,
                out_sampling_rate=out_rate,
                tmp_sampling_rate=tmp_rate,
                in_cutoff=float(cutoffs[prev]),
                out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]),
                out_half_width=float(half_widths[idx]),
                conv_kernel=kernel,
                up_factor=up,
                down_factor=down,
                up_taps=up_taps,
                down_taps=down_taps,
                down_radial=bool(config["use_radial_filters"]) and not is_critical,
                padding=(pad_lo, pad_hi, pad_lo, pad_hi),
            )
        )
    return spec_in, layers
