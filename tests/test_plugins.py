"""The plugin system with real distributions on the path (no monkeypatched registry)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "docs" / "examples" / "invkit-hello" / "invkit_hello.py"


def _install_dist(site: Path, name: str, version: str, entry_points: dict[str, str], files: dict[str, str]) -> None:
    """Write a distribution the way pip lays one out: modules plus ``<name>-<v>.dist-info``."""
    for rel, text in files.items():
        (site / rel).write_text(text)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    eps = "[invkit]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(eps)
    (info / "RECORD").write_text("")


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    _install_dist(site, "invkit-hello", "0.1.0", {"hello": "invkit_hello"},
                  {"invkit_hello.py": EXAMPLE.read_text()})
    _install_dist(site, "invkit-broken", "0.0.1", {"broken": "invkit_broken"},
                  {"invkit_broken.py": "import this_module_does_not_exist_anywhere\n"})
    return site


def _run(site: Path, code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    env.pop("INVKIT_DISABLE_PLUGIN_AUTOLOAD", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_third_party_adapter_loads_through_entry_point(site: Path, tmp_path: Path):
    ckpt = tmp_path / "hello.pt"
    proc = _run(site, f"""
        import json, torch, invkit
        from invkit_hello import HelloGenerator
        torch.manual_seed(0)
        G = HelloGenerator()
        torch.save({{"hello_generator": G.state_dict(), "hello_config": G.config}}, {str(ckpt)!r})
        forced = invkit.load_generator({str(ckpt)!r}, adapter="hello")
        detected = invkit.load_generator({str(ckpt)!r})
        ws = forced.mapping(torch.randn(2, 16))
        same = torch.equal(forced.synthesize(ws), G.eval().synthesize(ws))
        print(json.dumps({{"generators": invkit.list_generators(), "type": type(detected).__name__,
                           "same": same,
                           "broken": [p.name for p in invkit.plugins.broken_plugins()
                                      if p.distribution != "invkit"]}}))
    """)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "hello" in out["generators"]
    assert out["type"] == "HelloGenerator"
    assert out["same"] is True
    assert out["broken"] == ["broken"]


def test_plugins_command_shows_distribution_and_broken_plugin(site: Path):
    proc = _run(site, "import sys; from invkit.cli import main; sys.exit(main(['plugins', '--json']))")
    assert proc.returncode == 0, proc.stderr
    rows = {r["plugin"]: r for r in json.loads(proc.stdout)}
    assert rows["hello"]["distribution"] == "invkit-hello"
    assert rows["hello"]["provides"] == ["generator hello", "checkpoint identification"]
    assert rows["hello"]["error"] is None
    assert "this_module_does_not_exist_anywhere" in rows["broken"]["error"]
    # the built-ins are plugins of the invkit distribution itself
    assert rows["stylegan2"]["distribution"] == "invkit"


def test_disable_autoload_keeps_builtins_only(site: Path):
    proc = _run(site, """
        import json, invkit
        print(json.dumps({"gens": invkit.list_generators(),
                          "dists": sorted({p.distribution for p in invkit.plugins.plugins()})}))
    """, {"INVKIT_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "hello" not in out["gens"]
    assert out["dists"] == ["invkit"]


def test_plugin_registering_a_taken_name_is_reported_not_fatal(site: Path):
    shutil.copy(EXAMPLE, site / "invkit_hello_twin.py")
    _install_dist(site, "invkit-twin", "1.0", {"twin": "invkit_hello_twin"}, {})
    proc = _run(site, """
        import json, invkit
        print(json.dumps({"gens": invkit.list_generators(),
                          "broken": {p.name: p.error for p in invkit.plugins.broken_plugins()}}))
    """)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "hello" in out["gens"]
    # the newcomer's name is refused with one line naming both distributions; it is not broken
    assert "twin" not in out["broken"]
    proc = _run(site, "import sys; from invkit.cli import main; sys.exit(main(['plugins', '--json']))")
    rows = {r["plugin"]: r for r in json.loads(proc.stdout)}
    (line,) = rows["twin"]["refused"]
    assert "'hello'" in line and "invkit-twin" in line and "invkit-hello" in line and "\n" not in line
    assert rows["hello"]["refused"] == []


IMPOSTOR = """
from invkit.hookspecs import hookimpl

def _load(checkpoint, device="cpu"):
    raise RuntimeError("impostor adapter ran")

class _Editor:
    name = "sefa"
    def fit(self, **inputs):
        raise RuntimeError("impostor editor ran")

@hookimpl
def register_generators(register):
    register("stylegan2", _load, description="impostor")
    register("aaa-own", _load, description="a name of its own")

@hookimpl
def register_editors(register):
    register("sefa", _Editor)
"""


def test_plugin_cannot_take_over_builtin_names(tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    # "aaa" sorts before "invkit": the built-ins must still be registered first
    _install_dist(site, "aaa-impostor", "6.6", {"impostor": "aaa_impostor"}, {"aaa_impostor.py": IMPOSTOR})
    ckpt = tmp_path / "g.pt"
    proc = _run(site, f"""
        import json, torch, invkit
        from invkit.testing import tiny_stylegan2
        from invkit.adapters.stylegan2_formats import to_rosinality
        G = tiny_stylegan2(resolution=16)
        torch.save({{"g_ema": to_rosinality(G), "latent_avg": G.w_avg}}, {str(ckpt)!r})
        H = invkit.load_generator({str(ckpt)!r})
        sefa = invkit.plugins.editors().get("sefa")
        print(json.dumps({{"fp": H.fingerprint() == G.fingerprint(), "sefa": sefa.distribution,
                          "gen": invkit.plugins.generators().get("stylegan2").distribution,
                          "own": "aaa-own" in invkit.list_generators(),
                          "broken": [p.name for p in invkit.plugins.broken_plugins()
                                     if p.distribution == "aaa-impostor"],
                          "refused": [r for r in invkit.plugins.refusals() if "aaa-impostor" in r]}}))
    """)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["fp"] is True and out["sefa"] == "invkit" and out["gen"] == "invkit"
    assert out["own"] is True and out["broken"] == []
    assert len(out["refused"]) == 2
    assert all("aaa-impostor" in line and "(invkit)" in line for line in out["refused"])
    table = _run(site, "import sys; from invkit.cli import main; sys.exit(main(['plugins']))",
                 {"COLUMNS": "200"})
    assert "generator adapter 'stylegan2' from impostor (aaa-impostor) refused" in table.stdout


def test_builtin_plugins_all_load():
    import invkit

    invkit.plugins.reload()
    broken = {p.name: p.error for p in invkit.plugins.broken_plugins() if p.distribution == "invkit"}
    assert broken == {}
    assert {"stylegan2", "stylegan3"} <= set(invkit.list_generators())
    assert {"sefa", "interfacegan", "ganspace"} <= set(invkit.list_editors())


def test_detected_generator_without_adapter_name_can_be_saved(tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    text = EXAMPLE.read_text().replace('    adapter_name = "hello"\n', "")
    assert "adapter_name" not in text.split("class HelloGenerator")[1].split("def ")[0]
    _install_dist(site, "invkit-hello", "0.1.0", {"hello": "invkit_hello"}, {"invkit_hello.py": text})
    ckpt, out = tmp_path / "hello.pt", tmp_path / "hello.safetensors"
    proc = _run(site, f"""
        import torch, invkit
        from invkit_hello import HelloGenerator
        G = HelloGenerator()
        torch.save({{"hello_generator": G.state_dict(), "hello_config": G.config}}, {str(ckpt)!r})
        invkit.save_generator(invkit.load_generator({str(ckpt)!r}), {str(out)!r})
        print(type(invkit.load_generator({str(out)!r})).__name__)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "HelloGenerator"


def test_plugin_guide_documents_the_interfaces_as_they_are():
    import dataclasses

    import invkit

    doc = (REPO / "docs" / "plugins.md").read_text()
    fields = [f.name for f in dataclasses.fields(invkit.StyleAffine)]
    assert "invkit.StyleAffine(" + ", ".join(fields[:2]) in doc.replace("name: str, w_index: int", "name, w_index")
    assert all(f in doc for f in fields)
    assert "**`adapter_name` is required**" in doc and "`w_index` is the row of `ws`" in doc
    assert "requires_grad_(False)" in doc and "`eval()` mode" in doc
    kinds = __import__("invkit.editor", fromlist=["INPUT_KINDS"]).INPUT_KINDS
    assert all(f"`{k}`" in doc for k in kinds)
