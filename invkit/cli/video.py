"""``invkit video IN.mp4 --generator G --encoder E [--direction D --strength 2] --out OUT.mp4``.

Inverts (and optionally edits) the face in every frame and pastes it back: landmarks per frame,
smoothed over time (``--smooth`` frames, Gaussian sigma), FFHQ crops at the generator's
resolution, batched Feature-Style inversion, the edit ``--strength`` along ``--direction``
(reached after ``--ramp`` seconds), paste-back, H.264 mp4. ``--side-by-side`` also writes
original | result. Frames are streamed (memory does not depend on the video's length; there is
no frame limit). A JSON report with the frame counts, reconstruction metrics of the face crops
and the identity consistency (IC) goes to ``--report`` (default ``OUT.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..io.atomic import write_text
from ._args import check_outputs, finite_float, positive_int


def register(sub) -> None:
    p = sub.add_parser("video", help="invert/edit the face of a video and paste it back")
    p.add_argument("input", help="input video (mp4, mov, ...)")
    p.add_argument("--generator", "-g", required=True, help="generator checkpoint path, zoo name, URL or a recipe that ships one (toy)")
    p.add_argument("--encoder", "-e", required=True, help="encoder file (invkit .safetensors or official 143_enc.pth), a training run folder or checkpoint (its newest encoder), or a recipe that ships one (toy)")
    p.add_argument("--direction", "-d", default=None, help="direction file (.safetensors) to edit along")
    p.add_argument("--strength", type=finite_float, default=2.0, help="edit strength (default 2; needs --direction)")
    p.add_argument("--ramp", type=finite_float, default=0.0, help="seconds over which the strength grows from 0 (default 0)")
    p.add_argument("--out", "-o", required=True, help="output mp4")
    p.add_argument("--side-by-side", default=None, help="also write original | result here")
    p.add_argument("--report", default=None, help="JSON report (default: OUT with .json)")
    p.add_argument("--batch", type=positive_int, default=4, help="frames per forward pass (default 4)")
    p.add_argument("--overwrite", action="store_true", help="replace the output, side-by-side and report files if they exist")
    p.add_argument("--smooth", type=finite_float, default=2.0, help="landmark smoothing sigma in frames (0: off)")
    p.add_argument("--id-net", default="auto", choices=["auto", "arcface", "dlib", "none"],
                   help="identity network for IC (default auto: ArcFace if available, else dlib)")
    p.add_argument("--mask", default="parsing", choices=["parsing", "square"],
                   help="paste-back mask: face parsing when BiSeNet weights exist (default), or the feathered square")
    p.add_argument("--adapter", help="force a generator adapter instead of detecting it")
    p.add_argument("--k", type=int, default=None, help="layer K of an official encoder file (default 5)")
    p.add_argument("--input-size", type=int, default=256, help="encoder input side of an official encoder file")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, ... (default cpu)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..direction import Direction
    from ..fs_encoder import load_encoder
    from ..loading import load_generator
    from ..metrics import load_identity_embedder
    from ..video import VideoPipeline, probe, ramp, read_frames

    console = Console(stderr=True, soft_wrap=True)
    src, out = Path(args.input), Path(args.out)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such video file")
    if out.resolve() == src.resolve():
        raise ValueError(f"{out}: the output must not replace the input video")
    report_path = Path(args.report) if args.report else out.with_suffix(".json")
    check_outputs([out, args.side_by_side, report_path], args.overwrite,
                  [src, args.generator, args.encoder, args.direction])
    info = probe(src)
    G = load_generator(args.generator, adapter=args.adapter, device=args.device)
    E = load_encoder(args.encoder, G, k=args.k, device=args.device, input_size=args.input_size)
    direction = Direction.load(args.direction) if args.direction else None
    notes: list[str] = []
    identity = None if args.id_net == "none" else load_identity_embedder(args.id_net, args.device, notes=notes)
    pipeline = VideoPipeline(
        G, E, direction=direction, strength=ramp(args.strength, args.ramp), batch_size=args.batch,
        smooth_sigma=args.smooth, identity=identity, ic=identity is not None, face_mask=args.mask,
        device=args.device,
    )
    notes += pipeline.notes
    for note in notes:  # said before the frames, one line each, and kept in the report
        console.print(f"[yellow]warning:[/yellow] {note}", highlight=False)
    progress = Progress(TextColumn("[bold]frames"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console)
    with progress:
        task = progress.add_task("video", total=info.frames or None)
        report = pipeline.run(read_frames(src), info.fps, out, args.side_by_side,
                              on_frame=lambda i: progress.advance(task))
    data = report.to_dict()
    data.update({"notes": notes, "input": str(src), "direction": args.direction,
                 "strength": args.strength if direction is not None else 0.0, "ramp_seconds": args.ramp})
    write_text(report_path, json.dumps(data, indent=2, default=str) + "\n")
    missing = len(report.frames_without_face)
    console.print(f"{report.frames} frames ({missing} without a face, left unchanged) -> [bold]{out}[/bold]")
    if report.ic is not None:
        console.print(f"identity consistency {report.ic:.4f} (input {report.ic_input:.4f}; {report.identity_network})",
                      highlight=False)
    console.print(f"report -> {report_path}")
    return 0
