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
    # other installed plugins may add editors: check ours and the built-ins, not the exact list
    assert {"ganspace", "interfacegan", "meandiff", "sefa"} <= set(out["names"])
    assert out["dist"] == "invkit-meandiff"
    assert out["editor"] == "meandiff" and out["layers"] == [2, 3]
    assert out["moved"] > 1e-3 and out["same"] is True
    assert out["plugins"]["meandiff"] == ["invkit-meandiff", "0.2.0", None]
    for builtin in ("sefa", "interfacegan", "ganspace"):
        assert out["plugins"][builtin][0] == "invkit" and out["plugins"][builtin][2] is None


def test_autoload_switch_hides_third_party_editor(site: Path):
    code = "import invkit; print(','.join(invkit.list_editors()))"
    shown = set(_run(site, code).stdout.strip().split(","))
    hidden = _run(site, code, INVKIT_DISABLE_PLUGIN_AUTOLOAD="1")
    assert hidden.returncode == 0, hidden.stderr
    # the switch leaves exactly invkit's own editors, whatever else is installed
    builtin = set(hidden.stdout.strip().split(","))
    assert {"ganspace", "interfacegan", "sefa"} <= builtin and "meandiff" not in builtin
    assert "meandiff" in shown and builtin < shown


# ---- the documented example editor (docs/examples/invkit-groupdiff), run from the CLI ---------
EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "invkit-groupdiff"


@pytest.fixture()
def groupdiff(tmp_path: Path) -> Path:
    site = tmp_path / "gsite"
    site.mkdir()
    (site / "invkit_groupdiff.py").write_text((EXAMPLE / "invkit_groupdiff.py").read_text())
    info = site / "invkit_groupdiff-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: invkit-groupdiff\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[invkit]\ngroupdiff = invkit_groupdiff\n")
    (info / "RECORD").write_text("")
    return site


def _cli(site: Path, *argv: str) -> subprocess.CompletedProcess:
    return _run(site, f"import sys; from invkit.cli import main; sys.exit(main({list(argv)!r}))", COLUMNS="200")


def _codes(tmp_path: Path, n: int = 200):
    import torch

    from invkit.inversion import Inversion

    g = torch.Generator().manual_seed(0)
    ws = torch.randn(n, 4, 8, generator=g)
    planted = torch.zeros(8)
    planted[3] = 1.0
    labels = (ws[:, :2, 3].mean(1) > 0).float()
    ws[:, :2] += labels[:, None, None] * 2 * planted  # the positive group sits further along planted
    names = [f"img{i}.png" for i in range(n)]
    path = Inversion(ws, torch.zeros(n, 1, 2, 2), 2, "fpgroup", names).save(tmp_path / "codes.safetensors")
    csv = tmp_path / "labels.csv"
    csv.write_text("name,smiling,same\n" + "".join(f"{m},{int(v)},1\n" for m, v in zip(names, labels)))
    return path, csv


def test_example_editor_runs_from_the_cli(groupdiff: Path, tmp_path: Path):
    from invkit.direction import Direction

    codes, csv = _codes(tmp_path)
    help_ = _cli(groupdiff, "directions", "--help")
    assert "groupdiff" in help_.stdout and "invkit-groupdiff" in help_.stdout
    opts = _cli(groupdiff, "directions", "groupdiff", "--help").stdout
    for text in ("--codes FILE", "--labels CSV", "--attribute", "--layers ROWS", "--threshold",
                 "labels above this are the positive group (default 0.5)", "{w,w+}"):
        assert text in opts
    out = tmp_path / "dirs"
    proc = _cli(groupdiff, "directions", "groupdiff", "--codes", str(codes), "--labels", str(csv),
                "--attribute", "smiling", "--layers", "0-1", "--space", "w+", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    d = Direction.load(out / "groupdiff_wplus.safetensors")
    assert d.editor == "groupdiff" and d.space == "w+" and d.layers == [0, 1]
    assert d.generator_fingerprint == "fpgroup"
    assert float(d.vector[:2, 3].abs().min()) > 0.6 and float(d.vector[2:].abs().max()) == 0.0
    assert d.strength is not None and d.strength > 0  # calibrated on the codes, as for built-ins
    assert "groupdiff_wplus.safetensors" in proc.stdout
    missing = _cli(groupdiff, "directions", "groupdiff", "--codes", str(codes), "--out", str(out))
    assert missing.returncode == 2 and "--labels" in missing.stderr


def test_editor_returning_nothing_is_one_line_error(groupdiff: Path, tmp_path: Path):
    codes, csv = _codes(tmp_path)
    proc = _cli(groupdiff, "directions", "groupdiff", "--codes", str(codes), "--labels", str(csv),
                "--attribute", "same", "--out", str(tmp_path / "d"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert lines == [f"error: editor 'groupdiff' (invkit-groupdiff) returned no directions; nothing written to "
                     f"{tmp_path / 'd'}"]


def test_editor_without_declared_inputs_gets_a_clear_error(site: Path, tmp_path: Path):
    proc = _run(site, f"import sys; from invkit.cli import main; "
                      f"sys.exit(main(['directions', 'meandiff', '--out', {str(tmp_path / 'd')!r}]))")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error")]
    assert "editor 'meandiff' (invkit-meandiff) declares no inputs" in line and "Editor.inputs" in line
