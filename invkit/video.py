"""Video inversion and editing: decode, align, invert, edit, paste back, encode, all streamed.

A video is processed frame by frame through a chain of generators, so memory does not depend on
its length and there is no frame cap:

    decode (PyAV) -> 68 landmarks per frame (dlib) -> Gaussian smoothing of the landmark tracks
    over time -> FFHQ crop -> batched encoding -> optional edit (one direction, strength over
    time) -> paste-back into the frame -> encode (H.264 mp4), plus a side-by-side comparison.

At most ``smoothing radius + batch size`` frames are held at any time (:attr:`VideoReport.
max_frames_held`). Frames where no face is found are written unchanged and counted.

Needs the ``video`` extra (``av``) for files and the ``faces`` extra (dlib) for landmarks.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .align import AlignTransform, LandmarkDetector, align_face, parsing_mask, paste_back
from .direction import Direction
from .generator import Generator
from .inversion import Inversion
from .io.images import to_uint8
from .metrics import IdentityConsistency, IdentityEmbedder, ReconstructionMetrics

Strength = float | Callable[[float], float]


def _av():
    try:
        import av
    except ImportError:
        raise RuntimeError("video support needs PyAV: pip install 'invkit[video]'") from None
    return av


# ---- decoding and encoding -------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (``frames`` is 0 when unknown)."""

    width: int
    height: int
    fps: Fraction
    frames: int


def probe(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate and (when the container records it) frame count of a video file."""
    av = _av()
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            s = container.streams.video[0]
            fps = s.average_rate or s.guessed_rate or Fraction(25)
            return VideoInfo(s.codec_context.width, s.codec_context.height, Fraction(fps), int(s.frames or 0))
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot read video ({exc})") from None


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode a video file one frame at a time: ``[H, W, 3]`` uint8 RGB arrays."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot decode video ({exc})") from None


class VideoWriter:
    """H.264 (yuv420p) mp4 writer, fed ``[H, W, 3]`` uint8 frames; written atomically (the file
    appears under its name only when :meth:`close` succeeds). Odd sizes are padded by one
    edge-replicated pixel, as yuv420p needs even sides."""

    def __init__(self, path: str | os.PathLike, fps: Fraction | float, crf: int = 18, codec: str = "libx264"):
        av = _av()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed on success: an interrupted run never leaves a
        # truncated video under the real name, nor destroys a file that was there.
        self._tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.{id(self):x}.partial.mp4")
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        self._stream = self._container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001 * 1000))
        self._stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": str(crf)}
        self._size: tuple[int, int] | None = None
        self._av = av
        self._open = True
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        h, w = frame.shape[:2]
        if self._size is None:
            self._size = (h, w)
            self._stream.height, self._stream.width = h + h % 2, w + w % 2
        elif (h, w) != self._size:
            raise ValueError(f"{self.path}: frame {self.frames} is {w}x{h}, earlier frames were "
                             f"{self._size[1]}x{self._size[0]}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush and publish the file (an empty video is refused)."""
        if not self._open:
            return
        try:
            if self.frames == 0:
                raise ValueError(f"{self.path}: no frames were written")
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._open = False
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard the partial file (an existing file at ``path`` is left untouched)."""
        if self._open:
            with contextlib.suppress(Exception):
                self._container.close()
            self._open = False
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ---- landmark smoothing ----------------------------------------------------------------------
class LandmarkSmoother:
    """Gaussian smoothing of landmark tracks over time, streamed.

    Frame ``t``'s smoothed landmarks are the Gaussian-weighted mean (std ``sigma`` frames) of
    the detected landmarks of frames ``t - radius .. t + lookahead``, renormalised over the
    frames where a face was found. ``lookahead = radius`` (default) is the centred, symmetric
    window: frame ``t`` comes out once frame ``t + radius`` has gone in. ``lookahead = 0`` is
    causal (no delay, but it lags behind motion). ``sigma = 0`` disables smoothing.

    :meth:`push` takes one frame's payload and landmarks (``[68, 2]`` or None) and returns the
    frames that became ready, as ``(payload, smoothed landmarks or None)``; :meth:`flush` returns
    the rest at the end.
    """

    def __init__(self, sigma: float = 2.0, radius: int | None = None, lookahead: int | None = None):
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.radius = int(math.ceil(3 * sigma)) if radius is None else int(radius)
        if sigma == 0:
            self.radius = 0
        self.lookahead = self.radius if lookahead is None else min(int(lookahead), self.radius)
        self._landmarks: deque[np.ndarray | None] = deque(maxlen=self.radius + self.lookahead + 1)
        self._pending: deque = deque()
        self._seen = 0
        self._emitted = 0

    def _weights(self, offsets: np.ndarray) -> np.ndarray:
        if self.sigma == 0:
            return (offsets == 0).astype(np.float64)
        return np.exp(-0.5 * (offsets / self.sigma) ** 2)

    def _window_mean(self, t: int, back: int, ahead: int) -> np.ndarray | None:
        """Weighted mean of the landmarks of frames ``t - back .. t + ahead`` that have a face."""
        first = self._seen - len(self._landmarks)
        total, weight = None, 0.0
        for i, lm in enumerate(self._landmarks):
            offset = first + i - t
            if lm is None or not -back <= offset <= ahead:
                continue
            w = float(self._weights(np.array([offset], dtype=np.float64))[0])
            total = lm * w if total is None else total + lm * w
            weight += w
        return None if total is None else total / weight

    def _smoothed(self, t: int) -> np.ndarray | None:
        back, ahead = min(self.radius, t), min(self.lookahead, self._seen - 1 - t)
        if self.lookahead == self.radius:
            # Centred window: truncate it symmetrically at the ends of the video, so steady
            # motion is not pulled towards the only side that exists there.
            out = self._window_mean(t, min(back, ahead), min(back, ahead))
            if out is not None:
                return out
            # No face in the truncated window (a miss at the very start or end): use the
            # one-sided window rather than dropping the frame.
        return self._window_mean(t, back, ahead)

    def push(self, payload, landmarks: np.ndarray | None) -> list[tuple[object, np.ndarray | None]]:
        self._landmarks.append(None if landmarks is None else np.asarray(landmarks, dtype=np.float64))
        self._pending.append(payload)
        self._seen += 1
        ready = []
        while self._pending and self._emitted + self.lookahead < self._seen:
            ready.append((self._pending.popleft(), self._smoothed(self._emitted)))
            self._emitted += 1
        return ready

    def flush(self) -> list[tuple[object, np.ndarray | None]]:
        ready = []
        while self._pending:
            ready.append((self._pending.popleft(), self._smoothed(self._emitted)))
            self._emitted += 1
        return ready

    def smooth_track(self, track: Sequence[np.ndarray | None]) -> list[np.ndarray | None]:
        """Smooth a whole track at once (same results as pushing it frame by frame)."""
        out = []
        for i, lm in enumerate(track):
            out.extend(s for _, s in self.push(i, lm))
        out.extend(s for _, s in self.flush())
        return out


# ---- strength schedules ----------------------------------------------------------------------
def ramp(strength: float, seconds: float) -> Callable[[float], float]:
    """A strength that grows linearly from 0 to ``strength`` over the first ``seconds``."""
    if seconds <= 0:
        return lambda t: float(strength)
    return lambda t: float(strength) * min(max(t / seconds, 0.0), 1.0)


def _strength_at(strength: Strength, t: float) -> float:
    return float(strength(t)) if callable(strength) else float(strength)


# ---- the pipeline ----------------------------------------------------------------------------
@dataclass
class VideoReport:
    """What one video run did and measured.

    ``metrics``: reconstruction quality of the aligned face crops (input crop vs ``G(w, F)``,
    before any edit): ``{name: {"mean", "std", "n"}}``. ``ic``: identity consistency of the
    output (edited) face crops, ``ic_input`` the same for the input crops (the reference an
    edit should stay close to); both measured with ``identity_network``.
    """

    frames: int = 0
    frames_with_face: int = 0
    frames_without_face: list[int] = field(default_factory=list)
    fps: float = 0.0
    resolution: int = 0
    output: str = ""
    comparison: str | None = None
    metrics: dict = field(default_factory=dict)
    ic: float | None = None
    ic_input: float | None = None
    identity_network: str | None = None
    max_frames_held: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["frames_per_second_processed"] = self.frames / self.seconds if self.seconds else None
        return d


@dataclass
class _Item:
    index: int
    frame: np.ndarray
    crop: np.ndarray | None = None
    transform: AlignTransform | None = None


class VideoPipeline:
    """Invert (and optionally edit) the faces of a video and paste them back.

    Args:
        G: the generator.
        encoder: any :class:`invkit.Encoder` for ``G`` (``encode(images [B, 3, R, R] in [-1, 1])
            -> (ws, F)``, attribute ``k``); it receives crops at the generator's resolution.
        direction / strength: optional edit (paper Eq. 1 via :func:`invkit.editing.edit`);
            ``strength`` is a number or a function of time in seconds (see :func:`ramp`).
        batch_size: frames per encoder/generator batch.
        smooth_sigma: landmark smoothing in frames (0: none); see :class:`LandmarkSmoother`.
        detector: a :class:`LandmarkDetector` (or any object with ``detect(frame) -> [Face]``).
        metrics: reconstruction metrics per crop (names from :mod:`invkit.metrics`; "id" is
            not needed here, IC is reported when ``identity`` is given or ``ic=True``).
        identity: identity network for IC; with ``ic=True`` and none given,
            ``load_identity_embedder("auto")``.
        transform_size: alignment supersampling (default 2x the generator resolution; FFHQ's
            4x is slower and changes little at video resolutions).
        face_mask: "parsing" (BiSeNet mask when its weights exist, else the feathered square)
            or "square".

    Fallbacks (no BiSeNet weights, no ArcFace) are never silent: each is one line in
    ``notes`` (and in the report's ``notes``).
    """

    def __init__(
        self,
        G: Generator,
        encoder,
        direction: Direction | None = None,
        strength: Strength = 0.0,
        batch_size: int = 4,
        smooth_sigma: float = 2.0,
        detector=None,
        metrics: Sequence[str] = ("mse", "psnr", "ssim"),
        identity: IdentityEmbedder | None = None,
        ic: bool = True,
        transform_size: int | None = None,
        face_mask: str = "parsing",
        feather: float = 0.1,
        device: str | torch.device = "cpu",
    ) -> None:
        fp = getattr(encoder, "generator_fingerprint", "")
        if fp and fp != G.fingerprint():
            raise ValueError(f"encoder was trained for generator {fp}, not {G.fingerprint()}")
        if direction is not None:
            direction.check(G)
        self.G, self.encoder, self.direction, self.strength = G, encoder, direction, strength
        self.batch_size = max(1, int(batch_size))
        self.smooth_sigma = smooth_sigma
        self.detector = detector if detector is not None else LandmarkDetector()
        self.metric_names = [m for m in metrics if m not in ("id", "fid")]
        self.device = torch.device(device)
        self.identity = identity
        self.notes: list[str] = []
        if ic and identity is None:
            from .metrics import load_identity_embedder

            self.identity = load_identity_embedder("auto", self.device, notes=self.notes)
        self.size = G.resolution
        self.transform_size = transform_size or 2 * self.size
        self.feather = feather
        self.parser = None
        if face_mask == "parsing":
            try:
                from .nets.bisenet import BiSeNet

                self.parser = BiSeNet.from_zoo().to(self.device)
            except (FileNotFoundError, RuntimeError, ImportError) as exc:
                self.notes.append(f"face parsing unavailable ({' '.join(str(exc).split())}); pasting back "
                                  f"with the feathered square mask instead (--mask square says so)")
        elif face_mask != "square":
            raise ValueError(f"face_mask must be 'parsing' or 'square', got {face_mask!r}")

    # -- stages -----------------------------------------------------------------------------
    def _detect(self, frame: np.ndarray) -> np.ndarray | None:
        faces = self.detector.detect(frame)
        return faces[0].landmarks if faces else None

    def _aligned(self, frames: Iterable[np.ndarray]) -> Iterator[_Item]:
        smoother = LandmarkSmoother(self.smooth_sigma)
        for i, frame in enumerate(frames):
            self._held += 1
            self.max_held = max(self.max_held, self._held)
            for item, lm in smoother.push(_Item(i, frame), self._detect(frame)):
                yield self._align(item, lm)
        for item, lm in smoother.flush():
            yield self._align(item, lm)

    def _align(self, item: _Item, landmarks: np.ndarray | None) -> _Item:
        if landmarks is not None:
            item.crop, item.transform = align_face(item.frame, landmarks, self.size, self.transform_size)
        return item

    def _batches(self, items: Iterable[_Item]) -> Iterator[list[_Item]]:
        batch: list[_Item] = []
        with_face = 0
        for item in items:
            batch.append(item)
            with_face += item.crop is not None
            if with_face >= self.batch_size:
                yield batch
                batch, with_face = [], 0
        if batch:
            yield batch

    @torch.no_grad()
    def _process(self, batch: list[_Item], fps: float) -> list[np.ndarray]:
        faces = [it for it in batch if it.crop is not None]
        out_crops: dict[int, np.ndarray] = {}
        if faces:
            x = torch.from_numpy(np.stack([it.crop for it in faces])).permute(0, 3, 1, 2).float()
            x = (x / 127.5 - 1).to(self.device)
            # Encoders resize to their own input size (the FS encoder with the official halvings).
            ws, feats = self.encoder.encode(x)
            k = self.encoder.k
            recon = self.G.synthesize_from(k, feats, ws)
            if self.direction is not None:
                from .editing import edit

                inv = Inversion(ws, feats, k, self.G.fingerprint())
                alphas = torch.tensor([_strength_at(self.strength, it.index / fps) for it in faces],
                                      dtype=ws.dtype, device=ws.device)
                result = edit(self.G, inv, self.direction, alphas)
            else:
                result = recon
            self.recon_metrics.update(x, recon)
            if self.identity is not None:
                self.ic.update(self.identity.embed(result.clamp(-1, 1)))
                self.ic_input.update(self.identity.embed(x))
            for it, img in zip(faces, to_uint8(result)):
                out_crops[it.index] = img
        frames = []
        for it in batch:
            if it.crop is None:
                self.report.frames_without_face.append(it.index)
                frames.append(it.frame)
                continue
            crop = out_crops[it.index]
            mask = parsing_mask(crop, self.parser) if self.parser is not None else None
            frames.append(paste_back(it.frame, crop, it.transform, mask, self.feather))
        return frames

    # -- driver -----------------------------------------------------------------------------
    def run(
        self,
        frames: Iterable[np.ndarray],
        fps: float | Fraction,
        out: str | os.PathLike,
        comparison: str | os.PathLike | None = None,
        on_frame: Callable[[int], None] | None = None,
    ) -> VideoReport:
        """Process ``frames`` (``[H, W, 3]`` uint8, any iterable: nothing is read ahead beyond
        the smoothing window and one batch) at ``fps`` and write ``out`` (mp4) and optionally a
        side-by-side ``comparison`` (original | result). ``on_frame(i)`` is called after each
        written frame."""
        start = time.perf_counter()
        self.report = VideoReport(fps=float(fps), resolution=self.size, output=str(out),
                                  comparison=str(comparison) if comparison else None, notes=list(self.notes))
        self.recon_metrics = ReconstructionMetrics(self.metric_names or ["mse"], device=self.device)
        self.ic, self.ic_input = IdentityConsistency(), IdentityConsistency()
        self._held, self.max_held = 0, 0
        with contextlib.ExitStack() as stack:
            writer = stack.enter_context(VideoWriter(out, fps))
            side = stack.enter_context(VideoWriter(comparison, fps)) if comparison else None
            for batch in self._batches(self._aligned(frames)):
                for it, result in zip(batch, self._process(batch, float(fps))):
                    writer.write(result)
                    if side is not None:
                        side.write(np.concatenate([it.frame, result], axis=1))
                    self._held -= 1
                    self.report.frames += 1
                    if on_frame is not None:
                        on_frame(it.index)
        r = self.report
        r.frames_with_face = r.frames - len(r.frames_without_face)
        r.metrics = self.recon_metrics.summary() if self.metric_names else {}
        if self.identity is not None:
            r.identity_network = getattr(self.identity, "label", type(self.identity).__name__)
            r.ic = self.ic.value() if self.ic.frames >= 2 else None
            r.ic_input = self.ic_input.value() if self.ic_input.frames >= 2 else None
        r.max_frames_held = self.max_held
        r.seconds = time.perf_counter() - start
        return r


def process_video(
    source: str | os.PathLike,
    out: str | os.PathLike,
    G: Generator,
    encoder,
    comparison: str | os.PathLike | None = None,
    on_frame: Callable[[int], None] | None = None,
    **options,
) -> VideoReport:
    """Decode ``source`` and run a :class:`VideoPipeline` (``options`` are its arguments) on it
    at the file's frame rate."""
    info = probe(source)
    pipeline = VideoPipeline(G, encoder, **options)
    return pipeline.run(read_frames(source), info.fps, out, comparison, on_frame)
