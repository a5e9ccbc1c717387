"""A third-party editor registered through a real entry point (a distribution on sys.path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
"""A third-party invkit editor: the mean difference of two groups of W codes."""
import torch
from invkit import Direction, Editor
from invkit.hookspecs import hookimpl


class MeanDifference(Editor):
    name = "meandiff"

    def fit(self, generator, seed_a=0, seed_b=1, n=64, layers=None):
        za = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed_a))
        zb = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed_b)) + 1.0
        d = generator.mapping(zb)[:, 0].mean(0) - generator.mapping(za)[:, 0].mean(0)
        return [Direction(d / d.norm(), "w", "meandiff", self.name, generator.fingerprint(),
                          list(layers or []))]


@hookimpl
def register_editors(register):
    register("meandiff", MeanDifference, description="mean difference of two z groups")
'''


def _install(site: Path) -> None:
    """Lay the distribution out as pip does: the module and a ``*.dist-info`` with entry points."""
    (site / "invkit_meandiff.py").write_text(PLUGIN)
    info = site / "invkit_meandiff-0.2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: invkit-meandiff\nVersion: 0.2.0\n")
    (info / "entry_points.txt").write_text("[invkit]\nmeandiff = invkit_meandiff\n")
    (info / "RECORD").write_text("")


def _run(site: Path, code: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("INVKIT_DISABLE_PLUGIN_AUTOLOAD", None)
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    _install(site)
    return site


def test_third_party_editor_is_discovered_and_runs(site: Path):
    proc = _run(site, """
        import json, torch, invkit
        from invkit.testing import tiny_stylegan2
        from invkit.inversion import Inversion
        names = invkit.list_editors()
        entry = invkit.plugins.editors().get("meandiff")
        G = tiny_stylegan2(resolution=16)
        (d,) = entry.obj().fit(generator=G, layers=[2, 3])
        ws = G.mapping(torch.randn(1, G.z_dim))
        inv = Inversion(ws, G.features_at(2, ws), 2, G.fingerprint())
        rec = G.synthesize_from(2, inv.features, ws)
        moved = float((invkit.edit(G, inv, d, 3.0) - rec).abs().max())
        same = torch.equal(invkit.edit(G, inv, d, 0.0), rec)
        plugins = {p.name: [p.distribution, p.version, p.error] for p in invkit.plugins.plugins()}
        print(json.dumps({"names": names, "dist": entry.distribution, "moved": moved, "same": same,
                          "editor": d.editor, "layers": d.layers, "plugins": plugins}))
    """)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["names"] == ["ganspace", "interfacegan", "meandiff", "sefa"]
    assert out["dist"] == "invkit-meandiff"
    assert out["editor"] == "meandiff" and out["layers"] == [2, 3]
    assert out["moved"] > 1e-3 and out["same"] is True
    assert out["plugins"]["meandiff"] == ["invkit-meandiff", "0.2.0", None]
    for builtin in ("sefa", "interfacegan", "ganspace"):
        assert out["plugins"][builtin][0] == "invkit" and out["plugins"][builtin][2] is None


def test_autoload_switch_hides_third_party_editor(site: Path):
    code = "import invkit; print(','.join(invkit.list_editors()))"
    assert _run(site, code).stdout.strip() == "ganspace,interfacegan,meandiff,sefa"
    hidden = _run(site, code, INVKIT_DISABLE_PLUGIN_AUTOLOAD="1")
    assert hidden.returncode == 0, hidden.stderr
    assert hidden.stdout.strip() == "ganspace,interfacegan,sefa"
