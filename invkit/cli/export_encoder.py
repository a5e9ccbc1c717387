"""``invkit export-encoder RUN --out encoder.safetensors``: the encoder of a training run's
newest checkpoint (or of one checkpoint) as an encoder file, to try or share a run before it
ends. Every command that takes ``--encoder`` also accepts the run folder or checkpoint itself.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def register(sub) -> None:
    p = sub.add_parser("export-encoder", help="write a training run's newest encoder (or a checkpoint's) as an encoder file")
    p.add_argument("run", help="training run folder (its newest checkpoint is used) or a checkpoint file "
                               "(RUN/checkpoints/step-N.safetensors)")
    p.add_argument("--out", "-o", required=True, help="encoder file to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..io import runs

    source, out = Path(args.run), Path(args.out)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such run folder or checkpoint")
    checkpoint = runs.training_checkpoint(source)
    if checkpoint is None:
        raise ValueError(f"{source}: not a training run folder or training checkpoint")
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out}: already exists; pass --overwrite to replace it")
    runs.export_encoder(checkpoint, out)
    step = checkpoint.stem.removeprefix("step-").lstrip("0") or "0"
    Console(soft_wrap=True).print(f"wrote {out} (encoder at step {step}, from {checkpoint})", highlight=False)
    return 0
