"""The model zoo: names -> URL, sha256, adapter and recipe defaults, cached on disk.

Files are downloaded once into the cache folder (``INVKIT_CACHE``, default
``~/.cache/invkit``) and verified against the entry's sha256 when it records one: a full
digest, or the 8+ hex-digit prefix that torch.hub-style file names carry
(``alexnet-owt-7be5be79.pth``), checked as a prefix. The NVlabs generators and the manual
downloads record none (their publishers give no digest), so they are NOT verified: ``invkit
zoo`` says so per entry, and a download prints its sha256 so you can pin it with
``zoo.register``. ``INVKIT_OFFLINE=1`` forbids network
access (a cached or local file must exist). A local copy can stand in for any entry:
``INVKIT_WEIGHTS_DIR`` is searched for the entry's file name, and ``INVKIT_ZOO_<NAME>`` (name
upper-cased, ``-`` -> ``_``) gives a path directly.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_path


@dataclass(frozen=True)
class ZooEntry:
    """One downloadable file.

    Attributes:
        name: zoo name (``"stylegan2-ffhq-1024"``).
        url: where to download it (``https://``, ``file://``).
        sha256: expected hex digest, a prefix of it (at least 8 hex digits, as in torch.hub file
            names), or "" when none is known (the file is then not verified).
        filename: the file name in the cache.
        kind: "generator", "encoder", "auxiliary" (ArcFace, LPIPS trunks, Inception, ...).
        adapter: the generator adapter that reads it (generators only).
        defaults: recipe defaults (layer K, resolution, preprocessing, ...).
    """

    name: str
    url: str
    sha256: str = ""
    filename: str = ""
    kind: str = "generator"
    adapter: str = ""
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        return self.filename or Path(urllib.parse.urlparse(self.url).path).name

    @property
    def verification(self) -> str:
        """How a download is checked: "sha256", "sha256 prefix XXXXXXXX" or "none"."""
        if not self.sha256:
            return "none"
        return "sha256" if len(self.sha256) == 64 else f"sha256 prefix {self.sha256}"

    def matches(self, digest: str) -> bool:
        return not self.sha256 or digest.startswith(self.sha256.lower())

    @property
    def downloadable(self) -> bool:
        return urllib.parse.urlparse(self.url).scheme in ("http", "https", "file")


_NVLABS = "https://api.ngc.nvidia.com/v2/models/nvidia/research"
_TORCHVISION = "https://download.pytorch.org/models"

_ENTRIES: dict[str, ZooEntry] = {}


def register(entry: ZooEntry) -> None:
    """Add (or replace) a zoo entry; plugins may call this to publish their weights."""
    _ENTRIES[entry.name] = entry


for _e in [
    ZooEntry("stylegan2-ffhq-1024", f"{_NVLABS}/stylegan2/versions/1/files/stylegan2-ffhq-1024x1024.pkl",
             adapter="stylegan2", description="StyleGAN2 config-f FFHQ 1024 (stylegan3 repo pickle)",
             defaults={"k": 5, "resolution": 1024, "recipe": "faces"}),
    ZooEntry("stylegan2-car-config-f", "https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-car-config-f.pkl",
             adapter="stylegan2", description="StyleGAN2 config-f LSUN cars 512x384 (TensorFlow pickle)",
             defaults={"k": 5, "resolution": 512, "recipe": "cars"}),
    ZooEntry("stylegan2-ada-afhqcat-512", "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqcat.pkl",
             adapter="stylegan2", description="StyleGAN2-ADA AFHQ cat 512",
             defaults={"k": 5, "resolution": 512, "recipe": "cats"}),
    ZooEntry("stylegan2-ada-afhqdog-512", "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/afhqdog.pkl",
             adapter="stylegan2", description="StyleGAN2-ADA AFHQ dog 512",
             defaults={"k": 5, "resolution": 512, "recipe": "dogs"}),
    ZooEntry("stylegan2-ada-ffhq-1024", "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
             adapter="stylegan2", description="StyleGAN2-ADA FFHQ 1024", defaults={"k": 5, "resolution": 1024}),
    ZooEntry("stylegan3-t-ffhq-1024", f"{_NVLABS}/stylegan3/versions/1/files/stylegan3-t-ffhq-1024x1024.pkl",
             adapter="stylegan3", description="StyleGAN3-T FFHQ 1024", defaults={"resolution": 1024}),
    ZooEntry("stylegan3-r-ffhq-1024", f"{_NVLABS}/stylegan3/versions/1/files/stylegan3-r-ffhq-1024x1024.pkl",
             adapter="stylegan3", description="StyleGAN3-R FFHQ 1024", defaults={"resolution": 1024}),
    ZooEntry("stylegan3-r-ffhqu-256", f"{_NVLABS}/stylegan3/versions/1/files/stylegan3-r-ffhqu-256x256.pkl",
             adapter="stylegan3", description="StyleGAN3-R FFHQ-U 256", defaults={"resolution": 256}),
    # torch.hub-style names carry the first 8 hex digits of the file's sha256 (checked as a prefix)
    ZooEntry("alexnet-imagenet", f"{_TORCHVISION}/alexnet-owt-7be5be79.pth", kind="auxiliary",
             sha256="7be5be79", description="torchvision AlexNet (LPIPS trunk)"),
    ZooEntry("vgg16-imagenet", f"{_TORCHVISION}/vgg16-397923af.pth", kind="auxiliary",
             sha256="397923af", description="torchvision VGG16 (LPIPS trunk)"),
    ZooEntry("inception-fid", "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
             kind="auxiliary", sha256="6726825d", description="FID Inception-v3 (pytorch-fid port of the TF weights)"),
    # Published on file-sharing pages without a stable direct link: download by hand.
    ZooEntry("arcface-r50", "", filename="backbone.pth", kind="auxiliary",
             description="insightface ArcFace IResNet-50 (ms1mv3_arcface_r50_fp16/backbone.pth from the "
                         "insightface model zoo; manual download)"),
    ZooEntry("bisenet-face-parsing", "", filename="79999_iter.pth", kind="auxiliary",
             description="BiSeNet face parser, 19 classes (79999_iter.pth from zllrunning/face-parsing.PyTorch; "
                         "manual download)"),
]:
    register(_e)


class ZooError(RuntimeError):
    """A zoo file that cannot be had; the message says what to do."""


def has(name: str) -> bool:
    return name in _ENTRIES


def suggest(name: str, names: list[str] | None = None) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``names`` (default: the zoo's names), or ""."""
    close = difflib.get_close_matches(name, list(_ENTRIES) if names is None else names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def get(name: str) -> ZooEntry:
    try:
        return _ENTRIES[name]
    except KeyError:
        raise KeyError(f"unknown zoo name {name!r}{suggest(name)}; known: {', '.join(sorted(_ENTRIES))}") from None


def entries() -> list[ZooEntry]:
    return [_ENTRIES[n] for n in sorted(_ENTRIES)]


def cache_dir() -> Path:
    return Path(os.environ.get("INVKIT_CACHE") or Path.home() / ".cache" / "invkit")


def offline() -> bool:
    return os.environ.get("INVKIT_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _local_override(entry: ZooEntry) -> Path | None:
    direct = os.environ.get("INVKIT_ZOO_" + entry.name.upper().replace("-", "_"))
    if direct:
        path = Path(direct)
        if not path.is_file():
            raise ZooError(f"{path}: set for zoo entry {entry.name!r} but no such file")
        return path
    for folder in filter(None, os.environ.get("INVKIT_WEIGHTS_DIR", "").split(os.pathsep)):
        path = Path(folder) / entry.file_name
        if path.is_file():
            return path
    return None


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _copy_with_progress(response, out, url: str, log: Callable[[str], None]) -> None:
    """Copy with progress on stderr: a line at every 10% (every 50 MB when the size is unknown)."""
    total = int(response.headers.get("Content-Length") or 0) if getattr(response, "headers", None) else 0
    size = f"{total / 1e6:.1f} MB" if total else "size unknown"
    log(f"downloading {url} ({size})")
    done, next_mark = 0, 0.1
    while chunk := response.read(1 << 20):
        out.write(chunk)
        done += len(chunk)
        if total and done / total >= next_mark:
            log(f"  {100 * done // total:3d}%  {done / 1e6:.1f} / {total / 1e6:.1f} MB")
            next_mark = (int(10 * done / total) + 1) / 10
        elif not total and done // (50 << 20) != (done - len(chunk)) // (50 << 20):
            log(f"  {done / 1e6:.1f} MB")
    if not total or next_mark <= 1.0:
        log(f"  100%  {done / 1e6:.1f} MB")


def _download(url: str, dest: Path, entry: ZooEntry, log: Callable[[str], None] = _say) -> Path:
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                _copy_with_progress(response, out, url, log)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise ZooError(f"could not download {url}: {exc}") from None
        got = sha256_of(tmp)
        if not entry.matches(got):
            raise ZooError(f"{url}: sha256 mismatch (expected {entry.sha256}, got {got}); file discarded")
    if entry.sha256:
        log(f"verified {dest.name} ({entry.verification})")
    else:
        log(f"not verified: zoo entry {entry.name!r} records no sha256; this download's sha256 is {got}")
    return dest


def fetch(name_or_url: str) -> Path:
    """A local path for a zoo name or URL: a local override, the cache, or a download."""
    if has(name_or_url):
        entry = get(name_or_url)
    elif "://" in name_or_url:
        entry = ZooEntry(name_or_url, name_or_url, kind="url")
    else:
        get(name_or_url)  # raises, with a suggestion
    local = _local_override(entry)
    if local is not None:
        return local
    dest = cache_dir() / entry.file_name
    if dest.is_file():
        if entry.sha256 and not entry.matches(sha256_of(dest)):
            raise ZooError(f"{dest}: cached file does not match its sha256; delete it to download again")
        return dest
    if not entry.downloadable:
        raise ZooError(f"{entry.name}: {entry.file_name} is not in {dest.parent} and cannot be downloaded "
                       f"automatically ({entry.description}); place it there or in INVKIT_WEIGHTS_DIR")
    if offline():
        raise ZooError(
            f"{entry.name}: not in the cache ({dest}) and INVKIT_OFFLINE is set; download "
            f"{entry.url} there or point INVKIT_WEIGHTS_DIR at a folder holding {entry.file_name}"
        )
    return _download(entry.url, dest, entry)
