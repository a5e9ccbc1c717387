"""Wrong inputs on the command line: one top-level handler turns every error into one line that
names the path (``--debug`` shows the traceback); arguments are validated before any work; NaN
and Inf are refused; training falls back from a truncated newest checkpoint."""

from __future__ import annotations

import errno
import json

import pytest
import torch
from hostile import rewrite_invkit_meta

from invkit import cli
from invkit.cli import main
from invkit.direction import Direction
from invkit.inversion import Inversion
from invkit.io import tensorfile
from invkit.loading import save_generator
from invkit.losses import LossWeights
from invkit.testing import tiny_stylegan2


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


@pytest.fixture(scope="module")
def gfile(tmp_path_factory):
    G = tiny_stylegan2(resolution=16, w_dim=16, max_channels=16)
    return save_generator(G, tmp_path_factory.mktemp("g") / "G.safetensors")


def _failing_command(monkeypatch, exc: BaseException):
    import invkit.cli.sample as sample

    def boom(args):
        raise exc

    monkeypatch.setattr(sample, "run", boom)


@pytest.mark.parametrize("exc, expected", [
    (PermissionError(errno.EACCES, "Permission denied", "/root/out.png"), "/root/out.png: permission denied"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "out.png"), "out.png: is a directory"),
    (OSError(errno.ENOSPC, "No space left on device", "big.png"), "big.png: no space left on the device (disk full)"),
    (MemoryError(), "out of memory"),
    (AttributeError("'NoneType' object has no attribute 'shape'"), "AttributeError: 'NoneType' object"),
    (TypeError("unsupported operand"), "TypeError: unsupported operand"),
])
def test_one_line_for_every_error(monkeypatch, capsys, exc, expected):
    _failing_command(monkeypatch, exc)
    assert main(["sample", "-g", "x"]) == 1
    err = capsys.readouterr().err
    assert expected in " ".join(err.split()) and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(monkeypatch):
    _failing_command(monkeypatch, AttributeError("crafted"))
    with pytest.raises(AttributeError, match="crafted"):
        main(["sample", "-g", "x", "--debug"])


@pytest.mark.parametrize("argv", [
    ["sample", "-g", "x", "--batch", "0"],
    ["sample", "-g", "x", "--ncol", "-1"],
    ["sample", "-g", "x", "--trunc", "nan"],
    ["align", "a", "b", "--transform-size", "0"],
    ["align", "a", "b", "--detect-size", "-5"],
    ["directions", "ganspace", "-g", "x", "-o", "d", "--components", "0"],
    ["train", "toy", "--max-steps", "0"],
    ["invert", "-g", "x", "-e", "y", "-i", "z", "-o", "o", "--batch", "0"],
    ["video", "in.mp4", "-g", "x", "-e", "y", "-o", "o.mp4", "--strength", "inf"],
])
def test_arguments_are_validated_up_front(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_a_huge_seed_range_is_an_error_not_memory_exhaustion(gfile, tmp_path, capsys):
    assert main(["sample", "-g", str(gfile), "--seeds", "0-99999999999", "-o", str(tmp_path / "g.png")]) == 1
    assert "holds more than" in _err(capsys)


def test_a_bad_config_type_is_one_line_naming_the_file(gfile, tmp_path, capsys):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(gfile.read_bytes())
    rewrite_invkit_meta(path, lambda d: d["config"].update(z_dim="sixteen"))
    assert main(["info", str(path)]) == 1
    err = _err(capsys)
    assert "bad.safetensors:" in err and "Traceback" not in err


def test_nan_strengths_are_refused():
    from invkit.cli._args import parse_float_steps

    with pytest.raises(ValueError, match="NaN and Inf"):
        parse_float_steps("0,nan")
    with pytest.raises(ValueError, match="NaN and Inf"):
        parse_float_steps("-inf:3:5")


def test_codes_and_directions_with_nan_are_refused(tmp_path):
    inv = Inversion(torch.full((1, 4, 8), float("nan")), torch.zeros(1, 8, 4, 4), 3, "fp", ["a.png"])
    inv.save(tmp_path / "codes.safetensors")
    with pytest.raises(ValueError, match="codes.safetensors: tensor 'ws' holds NaN or Inf"):
        Inversion.load(tmp_path / "codes.safetensors")
    d = Direction(torch.tensor([1.0, float("inf")]), "w", "smile", "sefa", "fp")
    d.save(tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="d.safetensors: tensor 'vector' holds NaN or Inf"):
        Direction.load(tmp_path / "d.safetensors")


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    from invkit.training.checkpoints import CHECKPOINT_KIND, checkpoint_path, latest_checkpoint

    for step in (4, 8):
        tensorfile.save(checkpoint_path(tmp_path, step), {"w": torch.zeros(1000)}, {"kind": CHECKPOINT_KIND})
    newest = checkpoint_path(tmp_path, 8)
    newest.write_bytes(newest.read_bytes()[:-100])
    messages: list[str] = []
    assert latest_checkpoint(tmp_path, messages.append) == checkpoint_path(tmp_path, 4)
    assert "step-00000008.safetensors: truncated checkpoint" in messages[0]


def test_sigterm_exit_status(monkeypatch, capsys):
    import signal
    from types import SimpleNamespace

    import invkit.cli.train as train_cli

    result = SimpleNamespace(interrupted=True, stop_signal=signal.SIGTERM, step=3, run_dir="r", encoder_file=None,
                             last_losses={"total": 1.0})
    monkeypatch.setattr("invkit.training.train", lambda *a, **k: result)
    monkeypatch.setattr(train_cli, "get_recipe", lambda name: _FakeRecipe())
    assert main(["train", "fake", "--max-steps", "3"]) == 143
    assert "encoder" not in capsys.readouterr().err  # nothing was written: nothing is announced


class _FakeRecipe:
    name = "fake"
    generator = "g"
    loss = LossWeights()

    class schedule:  # noqa: N801 - stands in for a dataclass attribute
        batch_real = 0
        total_steps = 10

    def with_overrides(self, overrides):
        return self


def test_lpips_random_trunk_follows_the_run_seed():
    from invkit.recipe import Recipe
    from invkit.training.defaults import default_loss

    def trunk_weights(seed):
        recipe = Recipe(name="t", generator="g", k=3, seed=seed)
        recipe.loss_networks.lpips_trunk = "random"
        return [p.clone() for p in default_loss(None, recipe).lpips.trunk.parameters()]

    torch.manual_seed(0)
    a = trunk_weights(1)
    torch.manual_seed(123)
    b = trunk_weights(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], trunk_weights(2)[0])


def test_json_error_messages_are_escaped_markup(monkeypatch, capsys):
    _failing_command(monkeypatch, ValueError("missing ['a.b'] [red]x[/red]"))
    assert main(["sample", "-g", "x"]) == 1
    assert "missing ['a.b'] [red]x[/red]" in _err(capsys)


def test_describe_error_keeps_key_errors_plain():
    assert cli.describe_error(KeyError("no such thing")) == "no such thing"
    assert json.dumps(cli.describe_error(FileExistsError("x: exists")))
