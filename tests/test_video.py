"""Video pipeline: a synthetic moving/rotating astronaut clip end to end, streaming memory,
landmark smoothing against injected landmark noise."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

pytest.importorskip("dlib")
pytest.importorskip("av")
skdata = pytest.importorskip("skimage.data")

from invkit import align, video  # noqa: E402
from invkit.direction import Direction  # noqa: E402
from invkit.encoder import Encoder  # noqa: E402
from invkit.testing import tiny_stylegan2  # noqa: E402

FRAME = 160  # synthetic frames are FRAME x FRAME



@pytest.fixture(scope="module")
def detector():
    return align.LandmarkDetector()


@pytest.fixture(scope="module")
def photo_landmarks(detector):
    photo = skdata.astronaut()
    return photo, detector.detect(photo)[0].landmarks


def _frame_geometry(t: int):
    """Frame t shows the photo around a centre that drifts, rotated by a slowly varying angle,
    at 1.5 photo px per frame px: returns (2x2 matrix M, offset o) with
    photo_continuous = M @ frame_continuous + o."""
    angle = np.deg2rad(8 * np.sin(t / 9))
    scale = 1.5
    centre = np.array([220.0 + 12 * np.sin(t / 11), 125.0 + 8 * np.cos(t / 13)])
    m = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return m, centre - m @ np.array([FRAME / 2, FRAME / 2])


def synthetic_frames(photo: np.ndarray, n: int):
    """Lazily render n frames (never all at once)."""
    img = Image.fromarray(photo)
    for t in range(n):
        m, o = _frame_geometry(t)
        data = (m[0, 0], m[0, 1], o[0], m[1, 0], m[1, 1], o[1])
        yield np.asarray(img.transform((FRAME, FRAME), Image.AFFINE, data, Image.BILINEAR))


def true_landmarks(photo_lm: np.ndarray, t: int) -> np.ndarray:
    """The photo's landmarks as they appear in frame t (pixel-centre coordinates)."""
    m, o = _frame_geometry(t)
    return (photo_lm + 0.5 - o) @ np.linalg.inv(m).T - 0.5


class PoolEncoder(Encoder):
    """A small real encoder for the tiny generator: ws from pooled colours, F = G's own layer-k
    activation for those ws plus a learned-looking correction from the image."""

    def __init__(self, G, k: int = 3):
        super().__init__()
        self.num_ws, self.w_dim, self.k = G.num_ws, G.w_dim, k
        self.feature_shape = G.layer(k).shape
        self.generator_fingerprint = G.fingerprint()
        self._G = [G]  # not a submodule: the encoder does not own the generator
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Linear(3 * 4 * 4, G.w_dim)
        self.to_f = nn.Conv2d(3, self.feature_shape[0], 1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(self.proj.weight.shape, generator=g) * 0.2)
            self.to_f.weight.copy_(torch.randn(self.to_f.weight.shape, generator=g) * 0.1)
        self.register_buffer("w_avg", G.w_avg.clone())

    def encode(self, images):
        G = self._G[0]
        w = self.w_avg + self.proj(F.adaptive_avg_pool2d(images, 4).flatten(1))
        ws = w[:, None].expand(-1, self.num_ws, -1).contiguous()
        feats = G.features_at(self.k, ws) + self.to_f(F.interpolate(images, size=self.feature_shape[1:], mode="area"))
        return ws, feats


class ScriptedDetector:
    """Hands out known landmarks in frame order (a stand-in for dlib where detection cost would
    dominate the test)."""

    def __init__(self, tracks):
        self._it = iter(tracks)

    def detect(self, frame):
        lm = next(self._it)
        return [align.Face(lm, (0, 0, 1, 1))]


class _ProjEmbedder:
    metric_name = "id"
    label = "random projection (test)"

    def __init__(self):
        self.P = torch.randn(3 * 8 * 8, 16, generator=torch.Generator().manual_seed(3))

    def embed(self, x):
        return F.adaptive_avg_pool2d(x, 8).flatten(1) @ self.P


@pytest.fixture(scope="module")
def tiny():
    G = tiny_stylegan2(resolution=32, w_dim=32, max_channels=32)
    return G, PoolEncoder(G)


def test_end_to_end_synthetic_clip_with_edit(tmp_path, photo_landmarks, detector, tiny):
    photo, _ = photo_landmarks
    G, enc = tiny
    n = 60
    src = tmp_path / "clip.mp4"
    with video.VideoWriter(src, 24) as w:
        for frame in synthetic_frames(photo, n):
            w.write(frame)
    info = video.probe(src)
    assert (info.width, info.height, float(info.fps)) == (FRAME, FRAME, 24.0)
    d = torch.randn(G.w_dim, generator=torch.Generator().manual_seed(1))
    direction = Direction(d / d.norm(), "w", "test", "manual", G.fingerprint())
    seen = []
    report = video.process_video(
        src, tmp_path / "out.mp4", G, enc, comparison=tmp_path / "side.mp4", on_frame=seen.append,
        direction=direction, strength=video.ramp(3.0, 1.0), batch_size=8, detector=detector,
        identity=_ProjEmbedder(), face_mask="square",
    )
    assert report.frames == n and seen == list(range(n))
    assert report.frames_with_face >= n - 3, report.frames_without_face
    out = list(video.read_frames(tmp_path / "out.mp4"))
    side = list(video.read_frames(tmp_path / "side.mp4"))
    assert len(out) == n and out[0].shape == (FRAME, FRAME, 3)
    assert len(side) == n and side[0].shape == (FRAME, 2 * FRAME, 3)
    # The face region changed (the tiny generator cannot reproduce a face), the corners did not.
    orig = list(synthetic_frames(photo, n))
    diff = np.abs(out[30].astype(float) - orig[30])
    assert diff[60:100, 60:100].mean() > 10 and diff[:8, :8].mean() < 6  # 6: H.264 loss
    assert set(report.metrics) == {"mse", "psnr", "ssim"} and report.metrics["ssim"]["n"] == report.frames_with_face
    assert report.ic is not None and -1 <= report.ic <= 1 and report.ic_input is not None
    json.dumps(report.to_dict())


def test_memory_does_not_grow_with_length(tmp_path, photo_landmarks, tiny):
    photo, lm = photo_landmarks
    G, enc = tiny
    peaks, held = {}, {}
    for n in (30, 90):
        tracks = (true_landmarks(lm, t) for t in range(n))
        pipe = video.VideoPipeline(G, enc, batch_size=4, smooth_sigma=2.0, detector=ScriptedDetector(tracks),
                                   ic=False, face_mask="square")
        tracemalloc.start()
        report = pipe.run(synthetic_frames(photo, n), 24, tmp_path / f"m{n}.mp4")
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        held[n] = report.max_frames_held
        assert report.frames == n
    # Frames held: the smoothing look-ahead (radius 6) plus one batch, whatever the length.
    assert held[30] == held[90] <= 6 + 4 + 1
    # 60 more frames of 160x160x3 would be +4.6 MB if they were kept; allow 1 MB of noise.
    assert peaks[90] - peaks[30] < 1_000_000, peaks


def test_smoothing_reduces_crop_jitter(photo_landmarks):
    _, lm = photo_landmarks
    n = 80
    truth = [true_landmarks(lm, t) for t in range(n)]
    rng = np.random.default_rng(0)
    noisy = [t + rng.normal(0, 1.0, t.shape) for t in truth]  # 1 px landmark noise

    def jitter(track):
        quads = np.stack([align.ffhq_quad(x) for x in track])
        ref = np.stack([align.ffhq_quad(x) for x in truth])
        step_err = np.diff(quads, axis=0) - np.diff(ref, axis=0)
        return np.linalg.norm(step_err, axis=2).mean()

    raw = jitter(noisy)
    smooth = jitter(video.LandmarkSmoother(sigma=2.0).smooth_track(noisy))
    causal = jitter(video.LandmarkSmoother(sigma=2.0, lookahead=0).smooth_track(noisy))
    assert smooth < 0.4 * raw and causal < 0.7 * raw, (raw, smooth, causal)
    # Smoothing clean tracks barely moves them (the motion is slow).
    clean = video.LandmarkSmoother(sigma=2.0).smooth_track(truth)
    assert max(np.abs(c - t).max() for c, t in zip(clean, truth)) < 0.5


def test_smoother_streams_and_handles_missing_faces():
    s = video.LandmarkSmoother(sigma=1.0)  # radius 3
    track = [np.full((68, 2), float(i)) for i in range(10)]
    track[4] = None
    out = []
    for i, lm in enumerate(track):
        ready = s.push(i, lm)
        # Frame i comes out once frame i + radius has gone in.
        assert [p for p, _ in ready] == ([i - 3] if i >= 3 else [])
        out.extend(ready)
    out.extend(s.flush())
    assert [p for p, _ in out] == list(range(10))
    # The missing frame is filled from its neighbours (symmetric weights: exactly 4).
    assert np.allclose(out[4][1], 4.0)
    assert video.LandmarkSmoother(sigma=0).smooth_track([None, track[1]])[0] is None
    assert np.allclose(video.LandmarkSmoother(sigma=0).smooth_track(track[:3])[2], track[2])


def test_writer_is_atomic_and_errors_name_the_file(tmp_path):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(RuntimeError, match="boom"):
        with video.VideoWriter(target, 10) as w:
            w.write(np.zeros((33, 31, 3), np.uint8))  # odd sizes are padded
            raise RuntimeError("boom")
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mp4"]
    with pytest.raises(ValueError, match="no frames"):
        video.VideoWriter(tmp_path / "empty.mp4", 10).close()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="bad.mp4"):
        video.probe(bad)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        next(video.read_frames(tmp_path / "missing.mp4"))


def test_video_cli(tmp_path, photo_landmarks, capsys, monkeypatch):
    from invkit.cli import main
    from invkit.fs_encoder import FeatureStyleEncoder, save_encoder
    from invkit.loading import save_generator

    monkeypatch.setenv("COLUMNS", "300")
    photo, _ = photo_landmarks
    G = tiny_stylegan2(resolution=32, w_dim=16, max_channels=16)
    enc = FeatureStyleEncoder.for_generator(G, 3, input_size=32, depths=(1, 1, 1, 1), widths=(8, 16, 16, 32),
                                            stem_width=8)
    g_path, e_path = save_generator(G, tmp_path / "G.safetensors"), save_encoder(enc, tmp_path / "E.safetensors")
    d = torch.randn(G.w_dim, generator=torch.Generator().manual_seed(2))
    d_path = Direction(d / d.norm(), "w", "d", "manual", G.fingerprint()).save(tmp_path / "d.safetensors")
    src = tmp_path / "in.mp4"
    with video.VideoWriter(src, 12) as w:
        for frame in synthetic_frames(photo, 12):
            w.write(frame)
    out = tmp_path / "out.mp4"
    code = main(["video", str(src), "-g", str(g_path), "-e", str(e_path), "-d", str(d_path), "--strength", "2",
                 "--ramp", "0.5", "--out", str(out), "--side-by-side", str(tmp_path / "sbs.mp4"),
                 "--id-net", "none", "--mask", "square", "--batch", "5"])
    assert code == 0
    assert sum(1 for _ in video.read_frames(out)) == 12
    assert next(video.read_frames(tmp_path / "sbs.mp4")).shape == (FRAME, 2 * FRAME, 3)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["frames"] == 12 and report["strength"] == 2.0 and report["metrics"]["ssim"]["n"] >= 10
    assert "12 frames" in " ".join(capsys.readouterr().err.split())
    assert main(["video", str(tmp_path / "none.mp4"), "-g", str(g_path), "-e", str(e_path), "--out", str(out)]) == 1
    assert "none.mp4: no such video file" in " ".join(capsys.readouterr().err.split())


def test_missing_parser_weights_are_a_recorded_note_not_silent(tmp_path, tiny, monkeypatch):
    G, enc = tiny
    monkeypatch.setenv("INVKIT_OFFLINE", "1")
    monkeypatch.setenv("INVKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("INVKIT_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("INVKIT_ZOO_BISENET_FACE_PARSING", raising=False)
    pipe = video.VideoPipeline(G, enc, detector=ScriptedDetector(iter([])), ic=False, face_mask="parsing")
    assert pipe.parser is None
    (note,) = pipe.notes
    assert note.startswith("face parsing unavailable (") and "feathered square mask" in note and "\n" not in note
    pipe.detector = type("NoFaces", (), {"detect": lambda self, frame: []})()
    frames = (np.full((32, 32, 3), 100, np.uint8) for _ in range(2))
    report = pipe.run(frames, 24, tmp_path / "blank.mp4")
    assert report.frames == 2 and report.to_dict()["notes"] == [note]
    square = video.VideoPipeline(G, enc, detector=ScriptedDetector(iter([])), ic=False, face_mask="square")
    assert square.notes == []
