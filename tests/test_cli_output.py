"""What people read from the CLI: start-up cost, JSON output, pipes, help text, tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _py(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, cwd=REPO)


def test_import_and_version_do_not_import_torch():
    proc = _py("import sys, invkit; from invkit.cli import main; main(['--version']); "
               "print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    version, torch_loaded = proc.stdout.split()[-2:]
    assert version == __import__("invkit").__version__ and torch_loaded == "False"


def test_lazy_names_are_listed_and_resolve():
    import invkit

    for name in ("load_encoder", "edit", "mix", "Direction", "Generator", "load_generator", "export"):
        assert name in dir(invkit)
        assert callable(getattr(invkit, name))
    assert set(invkit.__all__) <= set(dir(invkit))


def _cli(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return _py(f"import sys; from invkit.cli import main; sys.exit(main({list(argv)!r}))", COLUMNS="80", **env)


def test_closed_pipe_ends_quietly():
    code = "import sys; from invkit.cli import main; sys.exit(main(['recipes', '--json']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    proc.stdout.close()  # like `| head` exiting before the command writes
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == 141


def test_zoo_json_says_which_entries_are_verified_and_table_keeps_names_whole():
    proc = _cli("zoo", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["entries"]}
    assert rows["alexnet-imagenet"]["verification"] == "sha256 prefix 7be5be79"
    assert rows["stylegan2-ffhq-1024"]["verification"] == "none"
    table = _cli("zoo").stdout
    for name, r in rows.items():
        assert f" {name} " in table
        assert ("none (not verified)" if r["verification"] == "none" else r["verification"]) in table


def test_recipes_json_lists_every_recipe_in_full():
    proc = _cli("recipes", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"faces", "cars", "toy"} <= set(rows)
    assert rows["faces"]["recipe"]["k"] == 5 and rows["faces"]["distribution"] == "invkit"


def test_misspelt_zoo_name_gets_a_suggestion():
    from invkit.io import zoo

    with pytest.raises(KeyError, match="did you mean 'stylegan2-ffhq-1024'"):
        zoo.get("stylegan2-ffhq-1042")
    proc = _cli("info", "stylegan2-ffhq-1042")
    assert proc.returncode == 1
    assert "did you mean 'stylegan2-ffhq-1024'" in proc.stderr and "Traceback" not in proc.stderr


def test_download_shows_progress_and_says_when_unverified(tmp_path, capsys, monkeypatch):
    from invkit.io import zoo

    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(3 << 20))
    monkeypatch.setenv("INVKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("INVKIT_OFFLINE", raising=False)
    zoo.register(zoo.ZooEntry("test-progress", src.as_uri(), kind="auxiliary"))
    path = zoo.fetch("test-progress")
    err = capsys.readouterr().err
    assert path.read_bytes() == src.read_bytes()
    assert f"downloading {src.as_uri()} (3.1 MB)" in err and "100%" in err
    assert f"not verified: zoo entry 'test-progress' records no sha256; this download's sha256 is {zoo.sha256_of(src)}" in err
    digest = zoo.sha256_of(src)
    zoo.register(zoo.ZooEntry("test-prefix", src.as_uri(), sha256=digest[:8], filename="p.bin", kind="auxiliary"))
    zoo.fetch("test-prefix")
    assert f"verified p.bin (sha256 prefix {digest[:8]})" in capsys.readouterr().err
    zoo.register(zoo.ZooEntry("test-badprefix", src.as_uri(), sha256="00000000", filename="q.bin", kind="auxiliary"))
    with pytest.raises(zoo.ZooError, match="sha256 mismatch"):
        zoo.fetch("test-badprefix")


def test_info_prints_long_paths_whole(tmp_path):
    from invkit import save_generator
    from invkit.testing import tiny_stylegan2

    folder = tmp_path / ("a-rather-long-folder-name-for-generators-" * 2)
    folder.mkdir()
    path = save_generator(tiny_stylegan2(resolution=16), folder / "my-generator-checkpoint.safetensors")
    proc = _cli("info", str(path))
    assert proc.returncode == 0, proc.stderr
    assert str(path) in proc.stdout
    data = json.loads(_cli("info", str(path), "--json").stdout)
    assert data["source"] == str(path) and data["adapter"] == "stylegan2"


def test_every_option_of_every_command_has_help(monkeypatch):
    import argparse

    import invkit.cli as cli

    monkeypatch.setattr(cli, "ARGV", ["directions"])  # also build the plugin editors' parsers
    missing, texts = [], {}

    def walk(p, path):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    walk(sp, [*path, name])
            elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                if not a.help:
                    missing.append(f"{' '.join(path)} {a.option_strings or a.dest}")
                for opt in a.option_strings:
                    texts[(" ".join(path), opt)] = a.help or ""

    walk(cli.build_parser(), ["invkit"])
    assert missing == []
    assert "cuda" in texts[("invkit sample", "--device")] and "random" in texts[("invkit invert", "--noise-mode")]
    assert "forward pass" in texts[("invkit sample", "--batch")]
    assert "seed" in texts[("invkit directions ganspace", "--seed")]


def test_readme_says_what_the_constraints_pin_and_what_they_do_not():
    readme = (REPO / "README.md").read_text()
    pins = [line for line in (REPO / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    for pin in pins:
        assert f"`{pin}`" in readme  # every pin is named where the guarantee is stated
    assert "does\n**not** choose the **build**" in readme or "does **not** choose the **build**" in readme
    assert "https://download.pytorch.org/whl/cpu" in readme and "resolves to the CUDA build" in readme


def test_readme_setup_line_is_exactly_the_ci_install_line():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("pip install")]
    readme = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("pip install")]
    assert len(ci) == 1 and readme[:1] == ci
    assert "ui" in ci[0] and "apt-get install" in (REPO / ".ci" / "run").read_text()  # the browser tests run in CI
