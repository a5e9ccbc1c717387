"""Outputs: nothing the user had is lost. Atomic writes never replace anything but a regular
file, never write through a symbolic link unless allowed (``--overwrite``), clean up after killed
writes; commands refuse existing outputs without ``--overwrite`` and never write over an input."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from invkit.cli import main
from invkit.io import atomic
from invkit.io.images import save_image
from invkit.loading import save_generator
from invkit.testing import tiny_stylegan2


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_atomic_write_refuses_a_fifo_and_leaves_it(tmp_path):
    fifo = tmp_path / "out.png"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="out.png: is a FIFO, not a regular file"):
        atomic.write_bytes(fifo, b"x")
    assert fifo.exists() and not fifo.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temp file left


def test_atomic_write_does_not_replace_a_symlink_unless_allowed(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    with pytest.raises(FileExistsError, match="link.txt: is a symbolic link"):
        atomic.write_text(link, "new")
    assert real.read_text() == "old" and link.is_symlink()
    with atomic.following_symlinks():
        atomic.write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_atomic_write_never_replaces_a_device(tmp_path):
    with pytest.raises(FileExistsError, match="not a regular file"):
        atomic.write_bytes("/dev/null", b"x")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_stale_temp_files_of_killed_writes_are_removed(tmp_path):
    stale = tmp_path / ".grid.abcd1234.png"
    fresh = tmp_path / ".grid.zyxw9876.png"
    other = tmp_path / ".notes.abcd1234.png"
    for p in (stale, fresh, other):
        p.write_bytes(b"partial")
    old = time.time() - atomic.STALE_SECONDS - 10
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    atomic.write_bytes(tmp_path / "grid.png", b"done")
    assert not stale.exists() and fresh.exists() and other.exists()


@pytest.fixture(scope="module")
def gfile(tmp_path_factory):
    G = tiny_stylegan2(resolution=16, w_dim=16, max_channels=16)
    return save_generator(G, tmp_path_factory.mktemp("g") / "G.safetensors")


def test_sample_refuses_existing_output_without_overwrite(gfile, tmp_path, capsys):
    out = tmp_path / "grid.png"
    out.write_bytes(b"mine")
    assert main(["sample", "-g", str(gfile), "--seeds", "0-1", "-o", str(out)]) == 1
    assert "grid.png: exists; pass --overwrite" in _err(capsys) and out.read_bytes() == b"mine"
    assert main(["sample", "-g", str(gfile), "--seeds", "0-1", "-o", str(out), "--overwrite"]) == 0
    assert Image.open(out).size[0] > 16


def test_sample_never_writes_over_its_generator(gfile, capsys):
    before = gfile.read_bytes()
    assert main(["sample", "-g", str(gfile), "--seeds", "0", "-o", str(gfile), "--overwrite"]) == 1
    assert "is also an input" in _err(capsys) and gfile.read_bytes() == before


def test_sample_random_noise_is_reproducible_with_seed(gfile, tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"r{i}.png"
        assert main(["sample", "-g", str(gfile), "--seeds", "0", "--noise-mode", "random", "--seed", "5",
                     "-o", str(out)]) == 0
        outs.append(np.asarray(Image.open(out)))
    assert np.array_equal(*outs)


def test_eval_refuses_an_output_that_is_one_of_its_input_images(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    target = images / "a.png"
    save_image(torch.zeros(3, 16, 16), target)
    before = target.read_bytes()
    code = main(["eval", "-g", "nope.safetensors", "-e", "nope.safetensors", "-i", str(images),
                 "-o", str(target), "--overwrite"])
    assert code == 1 and "a.png: is also an input" in _err(capsys) and target.read_bytes() == before


def test_eval_refuses_an_existing_report(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    save_image(torch.zeros(3, 16, 16), images / "a.png")
    report = tmp_path / "report.json"
    report.write_text("{}")
    code = main(["eval", "-g", "nope", "-e", "nope", "-i", str(images), "-o", str(report)])
    assert code == 1 and "report.json: exists; pass --overwrite" in _err(capsys)


@pytest.mark.parametrize("flag", ["--report", "--side-by-side"])
def test_video_never_writes_over_its_input(tmp_path, capsys, flag):
    src = tmp_path / "in.mp4"
    src.write_bytes(b"not really a video")
    code = main(["video", str(src), "-g", "nope", "-e", "nope", "-o", str(tmp_path / "out.mp4"),
                 flag, str(src), "--overwrite"])
    assert code == 1 and "in.mp4: is also an input" in _err(capsys)
    assert src.read_bytes() == b"not really a video"


def test_invert_overwrite_removes_the_previous_runs_images(tmp_path):
    from invkit.cli.invert import REC_W_DIR, REC_WF_DIR, remove_stale_images

    for folder in (REC_W_DIR, REC_WF_DIR):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "old.png").write_bytes(b"x")
        (tmp_path / folder / "new.png").write_bytes(b"x")
    remove_stale_images(tmp_path, {"new.png"})
    for folder in (REC_W_DIR, REC_WF_DIR):
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == ["new.png"]


def test_a_refused_align_rerun_keeps_alignment_json(tmp_path, monkeypatch, capsys):
    import invkit.align as align_mod

    class FakeDetector:
        def __init__(self, detect_size=640):
            pass

        def detect(self, photo):
            return [align_mod.Face(np.zeros((68, 2)), (0, 0, 8, 8))]

    def fake_align(photo, landmarks, size, transform_size=None):
        tf = align_mod.AlignTransform(np.zeros((4, 2)), size, (photo.shape[1], photo.shape[0]), {"run": "first"})
        return np.zeros((size, size, 3), np.uint8), tf

    monkeypatch.setattr(align_mod, "LandmarkDetector", FakeDetector)
    monkeypatch.setattr(align_mod, "align_face", fake_align)
    photos, out = tmp_path / "photos", tmp_path / "aligned"
    photos.mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(photos / "p.png")
    assert main(["align", str(photos), str(out), "--size", "16"]) == 0
    manifest = (out / "alignment.json").read_bytes()
    assert json.loads(manifest)["images"]["p.png"]["status"] == "ok"
    assert main(["align", str(photos), str(out), "--size", "16"]) == 1  # refused: crop exists
    assert "exists" in _err(capsys)
    assert (out / "alignment.json").read_bytes() == manifest
