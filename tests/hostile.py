"""A generator of hostile files: crafted pickles, checkpoints, configs and images.

Each helper writes one file that once hung, exhausted memory, mutated invkit's state or crashed
a reader with a traceback; ``tests/test_hostile_*.py`` load them through the public paths. Keep
adding to it: every new class of bad input gets a maker here and a test that fails without the
fix.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import struct
import sys
import types
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PERSISTENT = ("torch_utils.persistence", "_reconstruct_persistent_obj")


@contextlib.contextmanager
def fake_globals(*names: tuple[str, str]):
    """Make ``module.name`` importable for the pickler only (stand-in functions that raise)."""
    added = []
    for module, name in names:
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            mod_name = ".".join(parts[:i])
            if mod_name not in sys.modules:
                sys.modules[mod_name] = types.ModuleType(mod_name)
                added.append(mod_name)

        def standin(*args, **kwargs):
            raise RuntimeError("stand-in: never called")

        standin.__module__, standin.__qualname__, standin.__name__ = module, name, name
        setattr(sys.modules[module], name, standin)
    try:
        yield {n: getattr(sys.modules[m], n) for m, n in names}
    finally:
        for mod_name in added:
            sys.modules.pop(mod_name, None)


class _Call:
    """Pickles as ``fn(*args)``."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _record(reconstruct, class_name: str, state: dict) -> _Call:
    meta = {"type": "class", "version": 6, "module_src": "class SynthesisBlock: pass\n",
            "class_name": class_name, "state": state}
    return _Call(reconstruct, meta)


def shared_module_pickle(path: Path, levels: int = 50) -> Path:
    """An NVlabs-layout generator whose sub-module tree reuses one child twice per level:
    a few KB on disk, 2**levels paths for a reader that copies every path."""
    with fake_globals(PERSISTENT) as g:
        rec = g[PERSISTENT[1]]
        node = _record(rec, "Leaf", {"_parameters": {}, "_buffers": {}, "_modules": {}})
        for i in range(levels):
            node = _record(rec, f"L{i}", {"_parameters": {}, "_buffers": {}, "_modules": {"a": node, "b": node}})
        top = _record(rec, "Generator", {"_parameters": {}, "_buffers": {}, "_modules": {"synthesis": node},
                                         "_init_kwargs": {}})
        path.write_bytes(pickle.dumps({"G_ema": top}, protocol=2))
    return path


def shared_kwargs_pickle(path: Path, levels: int = 50) -> Path:
    """The same bomb in the constructor kwargs (a list holding one list twice per level)."""
    with fake_globals(PERSISTENT) as g:
        bomb: list = []
        for _ in range(levels):
            bomb = [bomb, bomb]
        top = _record(g[PERSISTENT[1]], "Generator",
                      {"_parameters": {}, "_buffers": {}, "_modules": {}, "_init_kwargs": {"x": bomb}})
        path.write_bytes(pickle.dumps({"G_ema": top}, protocol=2))
    return path


def build_on_allowed_global(module: str, name: str, slot_state: dict | None = None) -> bytes:
    """A pickle that loads an allow-listed global and runs ``BUILD`` on it (dict state, or
    ``(None, slot_state)`` which pickle applies with ``setattr``)."""
    value = {"hostile": True} if slot_state is None else (None, slot_state)
    state = pickle.dumps(value, protocol=2)[2:-1]
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + state + b"b."


def rewrite_invkit_meta(path: Path, edit) -> Path:
    """Rewrite an invkit safetensors file's JSON document with ``edit(doc)`` (tensors kept)."""
    tensors = load_file(str(path))
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    doc = json.loads(header["__metadata__"]["invkit"])
    edit(doc)
    save_file(tensors, str(path), metadata={"invkit": json.dumps(doc)})
    return path


def flip_last_weight_byte(path: Path) -> Path:
    """Flip one bit in the last byte of the tensor data (a bit-rotted download)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def stride_zero_checkpoint(path: Path, side: int = 1 << 16) -> Path:
    """A rosinality-layout ``.pt`` whose tensors each store one value but claim side x side."""
    one = torch.zeros(1)
    huge = one.expand(side, side)
    torch.save({"g_ema": {"style.1.weight": huge}, "latent_avg": torch.zeros(1).expand(side)}, path)
    return path


def refused_global_in_torch_zip(path: Path) -> Path:
    """A ``torch.save`` zip whose pickle names a global outside torch's weights-only list."""
    import os

    torch.save({"g_ema": {"w": torch.zeros(2)}, "extra": _Call(os.getcwd)}, path)
    return path


def png_bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


def png16(path: Path, value: int = 1 << 15, size: int = 16) -> Path:
    """A 16-bit greyscale PNG filled with ``value`` (of 65535)."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((size, size), value, dtype=np.uint16)).save(path)
    return path


def float_tiff(path: Path, value: float = 0.5, size: int = 16) -> Path:
    """A 32-bit float TIFF filled with ``value`` (in [0, 1])."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((size, size), value, dtype=np.float32), mode="F").save(path)
    return path


def exif_rotated_jpeg(path: Path, orientation: int = 6) -> Path:
    """A 16x8 JPEG (left half black, right half white) with an EXIF orientation tag."""
    import numpy as np
    from PIL import Image

    arr = np.zeros((8, 16, 3), dtype=np.uint8)
    arr[:, 8:] = 255
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    path.write_bytes(buf.getvalue())
    return path
