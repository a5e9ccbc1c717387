"""The ``invkit ui`` command without a browser: safe defaults, one-line startup errors, and Gradio
kept out of ``import invkit`` and of every other command."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from invkit.cli import main


@pytest.fixture
def gradio_found(monkeypatch):
    """Pretend the [ui] extra is installed (the checks below fail before Gradio is imported)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "gradio" else real(name, *a))


def test_without_gradio_the_command_says_what_to_install_in_one_line(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["ui"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: invkit ui needs Gradio: pip install 'invkit[ui]'"


def test_import_invkit_and_the_command_line_stay_free_of_gradio():
    code = ("import sys, invkit, invkit.cli, invkit.ui.session, invkit.ui.sources; invkit.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'fastapi', 'uvicorn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_startup_errors_are_one_line(gradio_found, capsys, tmp_path):
    assert main(["ui", "-g", str(tmp_path / "missing.pkl"), "-e", "toy"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing.pkl: no such file" in errors[0]
    assert main(["ui", "-g", "toy"]) == 1
    assert "give both --generator and --encoder" in capsys.readouterr().err


def test_a_mismatched_generator_and_encoder_stop_the_command_with_the_fingerprint_message(gradio_found, capsys,
                                                                                          tmp_path):
    from invkit.loading import save_generator
    from invkit.testing import tiny_stylegan2

    other = save_generator(tiny_stylegan2(resolution=64, w_dim=32, max_channels=32), tmp_path / "other.safetensors")
    assert main(["ui", "-g", str(other), "-e", "toy"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "encoder was trained for generator" in errors[0]


def test_the_server_binds_this_machine_only_and_shares_nothing_by_default(gradio_found, monkeypatch):
    page = pytest.importorskip("invkit.ui.page", reason="gradio is not installed (the [ui] extra)")
    calls = []
    monkeypatch.setattr(page, "serve", lambda session, *args: calls.append((session, args)))
    assert main(["ui", "--threads", "1"]) == 0
    session, (host, port, share, max_upload_mb) = calls[0]
    assert (host, port, share, max_upload_mb) == ("127.0.0.1", None, False, 300)
    assert "smile" in session.directions
    assert main(["ui", "--host", "0.0.0.0", "--port", "8123", "--share", "--threads", "1"]) == 0
    assert calls[1][1][:3] == ("0.0.0.0", 8123, True)
