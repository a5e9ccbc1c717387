"""What people read from the CLI: start-up cost, JSON output, pipes, help text, tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
