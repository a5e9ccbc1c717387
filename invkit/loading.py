"""``load_generator`` / ``save_generator``: from a file, zoo name or URL to a `Generator`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import plugins
from .generator import Generator
from .io import sizecheck, tensorfile
from .io.checkpoint import CheckpointError, CheckpointFile

GENERATOR_KIND = "generator"


def resolve(source: str | os.PathLike, kind: str = "generator") -> Path:
    """A local path for ``source``: an existing path; else a zoo name or URL (downloaded to the
    cache, or found there when offline); else the name of a registered recipe that ships a
    pretrained ``kind`` ("generator" or "encoder"; e.g. ``toy``, the demo's models). For an
    encoder, a training run folder or checkpoint stands for the encoder of the run's newest (or
    that) checkpoint, written once to ``<cache>/run-encoders/``."""
    path = Path(source)
    if kind == "encoder" and path.exists():
        from .io import runs, zoo

        checkpoint = runs.training_checkpoint(path)  # a run folder or a training checkpoint
        if checkpoint is not None:
            return runs.cached_encoder(checkpoint, zoo.cache_dir())
    if path.exists():
        return path
    text = str(source)
    from .io import zoo

    if "://" in text or zoo.has(text):
        return zoo.fetch(text)
    if text in plugins.recipes():
        entry = plugins.recipes().get(text)
        pretrained = getattr(entry.obj, "pretrained", None)
        if pretrained is not None:
            return Path(pretrained(kind))
        raise FileNotFoundError(f"{source}: recipe {text!r} ({entry.distribution}) ships no pretrained {kind}")
    hint = zoo.suggest(text) or zoo.suggest(text, plugins.list_recipes())
    raise FileNotFoundError(f"{source}: no such file, and not a zoo name or a recipe with a pretrained {kind}"
                            f"{hint} (see `invkit zoo`, `invkit recipes`)")


def identify(checkpoint: CheckpointFile) -> str:
    """The adapter name for a checkpoint, asked of the plugins (invkit files name it inside)."""
    meta = checkpoint.invkit_meta()
    if meta is not None:
        if meta.get("kind") != GENERATOR_KIND:
            raise CheckpointError(f"{checkpoint.path}: holds an invkit {meta.get('kind')!r}, not a generator")
        return meta["adapter"]
    if checkpoint.format == "empty":
        raise CheckpointError(f"{checkpoint.path}: empty file")
    name = plugins.plugin_manager().hook.identify_checkpoint(checkpoint=checkpoint)
    if name is None:
        if checkpoint.refusal is not None:  # say why it was refused, not "unrecognised"
            raise checkpoint.refusal
        known = ", ".join(plugins.list_generators()) or "none"
        raise CheckpointError(
            f"{checkpoint.path}: no adapter recognises this {checkpoint.format} file "
            f"(adapters: {known}; pass adapter=... to force one)"
        )
    return name


def rebuild_checked(rebuild, meta: dict, tensors: dict[str, torch.Tensor], path: Path,
                    device: str | torch.device = "cpu") -> Generator:
    """``rebuild(meta["config"], tensors, device)`` for an invkit generator file, guarded: the
    config is first tried on the meta device against the tensors (nothing allocated), and the
    rebuilt weights must have the fingerprint the file records (bit flips, edited tensors)."""
    config = meta.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: invkit generator file without a config")
    sizecheck.probe(lambda: rebuild(config, tensors, "meta"), tensors, path, "generator")
    try:
        G = rebuild(config, tensors, device)
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the generator ({type(exc).__name__}: {exc})") from None
    recorded = meta.get("fingerprint")
    if recorded is not None and G.fingerprint() != recorded:
        raise CheckpointError(f"{path}: the weights do not match the fingerprint the file records "
                              f"({G.fingerprint()} != {recorded}): the file is corrupt or was edited")
    return G


def load_generator(
    source: str | os.PathLike,
    adapter: str | None = None,
    device: str | torch.device = "cpu",
) -> Generator:
    """Load a pretrained generator.

    Args:
        source: a checkpoint path (rosinality/pSp ``.pt``, NVlabs ``.pkl``, invkit
            ``.safetensors``, ...), a zoo name, or a URL.
        adapter: force this adapter instead of asking the plugins which one reads the file.
        device: where to put the generator; it is returned in ``eval()`` mode.
    """
    checkpoint = CheckpointFile(resolve(source))
    meta = checkpoint.invkit_meta()
    if meta is not None and adapter is None:
        if meta.get("kind") != GENERATOR_KIND:
            raise CheckpointError(f"{checkpoint.path}: holds an invkit {meta.get('kind')!r}, not a generator")
        entry = plugins.generators().get(meta["adapter"])
        rebuild = entry.extra.get("from_config")
        if rebuild is None:
            raise CheckpointError(f"{checkpoint.path}: adapter {entry.name!r} cannot rebuild from a config")
        tensors, meta = tensorfile.load(checkpoint.path, kind=GENERATOR_KIND)
        G = rebuild_checked(rebuild, meta, tensors, checkpoint.path, device)
    else:
        name = adapter or identify(checkpoint)
        try:
            G = plugins.generators().get(name).obj(checkpoint, device)
        except (AttributeError, TypeError, IndexError, KeyError) as exc:  # crafted or malformed contents
            detail = " ".join(str(exc).split())[:200]
            raise CheckpointError(f"{checkpoint.path}: malformed {name} checkpoint "
                                  f"({type(exc).__name__}: {detail})") from None
        G.adapter_name = G.adapter_name or name  # save_generator needs it to rebuild the file
    return G.to(device).eval().requires_grad_(False)


def save_generator(G: Generator, path: str | os.PathLike) -> Path:
    """Save ``G`` in invkit's own format (safetensors + JSON config naming its adapter)."""
    if not G.adapter_name:
        raise ValueError("generator has no adapter_name; cannot record how to rebuild it")
    return tensorfile.save(
        path,
        dict(G.state_dict()),
        {"kind": GENERATOR_KIND, "adapter": G.adapter_name, "config": G.config,
         "fingerprint": G.fingerprint()},
    )
