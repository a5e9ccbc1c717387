"""``invkit align IN_DIR OUT_DIR``: FFHQ-aligned face crops of a folder of photos.

For each photo, dlib's 68 landmarks of the largest face (``--all-faces``: of every face) give the
FFHQ crop, written as ``OUT_DIR/<stem>.png`` (``<stem>_<i>.png`` for every face). The crop
transforms go to ``OUT_DIR/alignment.json`` so an edited crop can be pasted back into its photo
(:func:`invkit.align.paste_back`). Photos with no face, with several faces, or that cannot be
read are listed at the end and in the JSON; none is dropped silently, and the exit code is 1 when
any photo produced no crop. Existing crops are not overwritten without ``--overwrite``.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..io.atomic import atomic_path, write_text
from ..io.images import list_images
from ._args import positive_int
from ._output import keep_whole, print_table

MANIFEST = "alignment.json"


def register(sub) -> None:
    p = sub.add_parser("align", help="FFHQ-style face alignment of a folder of photos")
    p.add_argument("in_dir", help="folder of photos")
    p.add_argument("out_dir", help="folder for the aligned crops (and alignment.json)")
    p.add_argument("--size", type=int, default=1024, help="crop side in px (default 1024)")
    p.add_argument("--transform-size", type=positive_int, default=None,
                   help="supersampling side before the final resize (default 4x --size, as FFHQ)")
    p.add_argument("--all-faces", action="store_true", help="write a crop for every face, not just the largest")
    p.add_argument("--detect-size", type=positive_int, default=640,
                   help="photos are downscaled to this long side for face detection (default 640)")
    p.add_argument("--overwrite", action="store_true", help="replace crops written by an earlier run")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..align import LandmarkDetector, align_face, load_photo

    console = Console(stderr=True, soft_wrap=True)
    if args.size < 8:
        raise ValueError(f"--size must be >= 8, got {args.size}")
    in_dir, out_dir = Path(args.in_dir), Path(args.out_dir)
    files = list_images(in_dir)
    if not files:
        raise ValueError(f"{in_dir}: no images (looked for .png, .jpg, .jpeg, .bmp, .webp, .tif)")
    if out_dir.resolve() == in_dir.resolve():
        raise ValueError(f"{out_dir}: the output folder must differ from the input folder")
    detector = LandmarkDetector(detect_size=args.detect_size)
    manifest_path = out_dir / MANIFEST
    manifest = {"size": args.size, "protocol": "FFHQ (dlib 68 landmarks, oriented quad, reflect padding)",
                "images": {}}
    if manifest_path.is_file():
        try:
            manifest["images"] = json.loads(manifest_path.read_text()).get("images", {})
        except (OSError, json.JSONDecodeError):
            pass
    problems: list[tuple[str, str]] = []
    refused = 0
    changed = False  # a re-run that only refused keeps alignment.json (its paste-back transforms) as it was
    progress = Progress(TextColumn("[bold]aligning"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console)
    with progress:
        task = progress.add_task("align", total=len(files))
        for path in files:
            entry: dict = {"source": str(path)}
            try:
                photo = load_photo(path)
                faces = detector.detect(photo)
                entry["n_faces"] = len(faces)
                if not faces:
                    entry["status"] = "no_face"
                    problems.append((path.name, "no face found"))
                else:
                    chosen = faces if args.all_faces else faces[:1]
                    names = [path.stem] if len(chosen) == 1 and not args.all_faces else \
                        [f"{path.stem}_{i}" for i in range(len(chosen))]
                    targets = [out_dir / f"{n}.png" for n in names]
                    existing = [t for t in targets if t.exists()]
                    if existing and not args.overwrite:
                        raise FileExistsError(f"{existing[0]}: exists (pass --overwrite to replace it)")
                    entry["crops"] = []
                    for face, target in zip(chosen, targets):
                        crop, tf = align_face(photo, face.landmarks, args.size, args.transform_size)
                        with atomic_path(target) as tmp:
                            Image.fromarray(crop).save(tmp, format="PNG")
                        entry["crops"].append({"file": target.name, "box": list(face.box), **tf.to_dict()})
                    entry["status"] = "ok"
                    if len(faces) > 1:
                        note = "all aligned" if args.all_faces else "largest aligned"
                        problems.append((path.name, f"{len(faces)} faces ({note})"))
            except FileExistsError as exc:
                problems.append((path.name, str(exc)))
                refused += 1
                if path.name in manifest["images"]:
                    progress.advance(task)
                    continue  # its crops and transforms from the earlier run stay as they were
                entry["status"] = "error"
                entry["error"] = str(exc)
            except (ValueError, OSError) as exc:
                entry["status"] = "error"
                entry["error"] = str(exc)
                problems.append((path.name, str(exc)))
            changed = changed or manifest["images"].get(path.name) != entry
            manifest["images"][path.name] = entry
            progress.advance(task)
    if changed or not manifest_path.is_file():
        write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    ok = sum(1 for p in files if manifest["images"][p.name]["status"] == "ok")
    if problems:
        table = Table(title="photos needing attention")
        table.add_column("photo")
        table.add_column("issue")
        for name, issue in problems:
            table.add_row(name, issue)
        print_table(keep_whole(table, "photo"), Console(stderr=True))
    console.print(f"{ok}/{len(files)} photos aligned at {args.size} px -> [bold]{out_dir}[/bold] "
                  f"(transforms in {MANIFEST})")
    return 0 if ok == len(files) and not refused else 1
