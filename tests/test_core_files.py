"""Core file formats and helpers: invkit safetensors files, Inversion, Direction, atomic writes,
checkpoint sniffing, the zoo cache and CLI argument parsing."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest
import torch

from invkit import Direction, Inversion
from invkit.cli._args import parse_float_steps, parse_int_ranges
from invkit.direction import save_directions
from invkit.io import tensorfile, zoo
from invkit.io.atomic import atomic_path
from invkit.io.checkpoint import CheckpointError, CheckpointFile, sniff_format


def test_inversion_round_trip_and_indexing(tmp_path: Path):
    inv = Inversion(torch.randn(3, 10, 8), torch.randn(3, 4, 8, 8), 5, "abc", ["a", "b", "c"], {"enc": "e1"})
    inv.save(tmp_path / "codes.safetensors")
    back = Inversion.load(tmp_path / "codes.safetensors")
    assert torch.equal(back.ws, inv.ws) and torch.equal(back.features, inv.features)
    assert (back.k, back.generator_fingerprint, back.names, back.meta) == (5, "abc", ["a", "b", "c"], {"enc": "e1"})
    assert back[1].names == ["b"] and back[1:].names == ["b", "c"]
    assert len(Inversion.cat([back[0], back[2]])) == 2
    with pytest.raises(ValueError, match="same N"):
        Inversion(torch.randn(2, 10, 8), torch.randn(3, 4, 8, 8), 5, "abc")


def test_loading_the_wrong_kind_is_refused(tmp_path: Path):
    Direction(torch.randn(8), "w", "d", "sefa", "abc").save(tmp_path / "d.safetensors")
    with pytest.raises(tensorfile.FileFormatError, match="expected a 'inversion'"):
        Inversion.load(tmp_path / "d.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(tensorfile.FileFormatError, match="junk.safetensors"):
        Direction.load(tmp_path / "junk.safetensors")


def test_direction_apply_and_space_checks(tmp_path: Path):
    ws = torch.zeros(2, 6, 4)
    d = Direction(torch.tensor([1.0, 0, 0, 0]), "w", "x", "sefa", "fp", layers=[0, 1])
    moved = d.apply(ws, 2.0)
    assert torch.equal(moved[:, :2, 0], torch.full((2, 2), 2.0))
    assert torch.equal(moved[:, 2:], ws[:, 2:])
    per_sample = d.apply(ws, torch.tensor([1.0, -1.0]))
    assert per_sample[0, 0, 0] == 1 and per_sample[1, 0, 0] == -1
    wplus = Direction(torch.ones(5, 4), "w+", "y", "interfacegan", "fp")
    with pytest.raises(ValueError, match=r"W\+ direction 'y' is \[5, 4\], codes are \[6, 4\]"):
        wplus.apply(ws, 1.0)
    zdir = Direction(torch.ones(4), "z", "zz", "ganspace", "fp")
    with pytest.raises(ValueError, match="lives in Z"):
        zdir.apply(ws, 1.0)
    with pytest.raises(ValueError, match="needs a 2-D vector"):
        Direction(torch.ones(4), "w+", "bad", "x", "fp")
    paths = save_directions([d, wplus], tmp_path / "dirs")
    assert [p.name for p in paths] == ["x.safetensors", "y.safetensors"]
    back = Direction.load(paths[0])
    assert back.layers == [0, 1] and torch.equal(back.vector, d.vector)


def test_atomic_path_keeps_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "keep.txt"
    target.write_text("precious")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_atomic_path_gives_ordinary_permissions(tmp_path: Path):
    import os

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "new.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o644
    os.chmod(tmp_path / "new.bin", 0o640)
    with atomic_path(tmp_path / "new.bin") as tmp:
        tmp.write_bytes(b"y")
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640


def test_sniff_and_checkpoint_errors(tmp_path: Path):
    good = tmp_path / "g.pt"
    torch.save({"g_ema": {"x": torch.ones(2)}, "args": argparse.Namespace(size=64)}, good)
    ck = CheckpointFile(good)
    assert ck.format == "torch-zip"
    assert ck.torch_object()["args"].size == 64  # Namespace allowed under weights_only
    trunc = tmp_path / "t.pt"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="t.pt: truncated or corrupt"):
        CheckpointFile(trunc).torch_object()
    assert sniff_format(b"") == "empty"
    assert sniff_format(b"\x80\x04\x95") == "pickle"
    assert sniff_format(b"hello world") == "unknown"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        CheckpointFile(tmp_path / "nope.pt")


def test_torch_file_needing_code_is_refused(tmp_path: Path):
    import pathlib

    bad = tmp_path / "evil.pt"
    torch.save({"obj": pathlib.PurePosixPath("/etc/passwd")}, bad)  # any non-allow-listed class
    with pytest.raises(CheckpointError, match="evil.pt: refused to load"):
        CheckpointFile(bad).torch_object()


def test_zoo_fetch_file_url_with_checksum(tmp_path: Path, monkeypatch):
    src = tmp_path / "weights.bin"
    src.write_bytes(b"0123456789" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    monkeypatch.setenv("INVKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("INVKIT_OFFLINE", raising=False)
    zoo.register(zoo.ZooEntry("test-weights", src.as_uri(), sha256=digest, kind="auxiliary"))
    path = zoo.fetch("test-weights")
    assert path == tmp_path / "cache" / "weights.bin" and path.read_bytes() == src.read_bytes()
    zoo.register(zoo.ZooEntry("test-bad", src.as_uri(), sha256="0" * 64, filename="bad.bin", kind="auxiliary"))
    with pytest.raises(zoo.ZooError, match="sha256 mismatch"):
        zoo.fetch("test-bad")
    assert not (tmp_path / "cache" / "bad.bin").exists()
    monkeypatch.setenv("INVKIT_OFFLINE", "1")
    zoo.register(zoo.ZooEntry("test-missing", src.as_uri(), filename="other.bin", kind="auxiliary"))
    with pytest.raises(zoo.ZooError, match="INVKIT_OFFLINE"):
        zoo.fetch("test-missing")
    monkeypatch.setenv("INVKIT_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(zoo.ZooError, match="other.bin"):
        zoo.fetch("test-missing")
    (tmp_path / "other.bin").write_bytes(b"local")
    assert zoo.fetch("test-missing") == tmp_path / "other.bin"


def test_cli_ranges():
    assert parse_int_ranges("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_float_steps("-3:3:7") == [-3, -2, -1, 0, 1, 2, 3]
    assert parse_float_steps("1.5") == [1.5]
    with pytest.raises(ValueError, match="bad range"):
        parse_int_ranges("3-1")


def test_manual_zoo_entry_says_where_to_put_the_file(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("INVKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("INVKIT_WEIGHTS_DIR", raising=False)
    with pytest.raises(zoo.ZooError, match="backbone.pth is not in .* cannot be downloaded automatically"):
        zoo.fetch("arcface-r50")
    (tmp_path / "backbone.pth").write_bytes(b"x")
    assert zoo.fetch("arcface-r50") == tmp_path / "backbone.pth"


def test_register_accepts_the_hookspec_signatures():
    from invkit.plugins import PluginInfo, _registrar
    from invkit.registry import Registry

    info = PluginInfo("p", "m", "dist", "1.0")
    gens, eds = Registry("generator adapter"), Registry("editor")
    _registrar(gens, info, ("from_config",))("a", len, max, "adapter a")
    _registrar(gens, info, ("from_config",))("b", len, description="adapter b")
    _registrar(eds, info)("e", dict, "an editor")
    assert gens.get("a").extra == {"from_config": max} and gens.get("a").description == "adapter a"
    assert gens.get("b").extra == {} and gens.get("b").description == "adapter b"
    assert eds.get("e").description == "an editor" and eds.get("e").distribution == "dist"
    with pytest.raises(TypeError, match="unexpected argument 'colour'"):
        _registrar(eds, info)("f", dict, colour="red")
    with pytest.raises(TypeError, match="too many arguments"):
        _registrar(eds, info)("g", dict, "d", "extra")
