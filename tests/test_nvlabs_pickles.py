"""NVlabs network pickles (stylegan2-ada-pytorch and stylegan3 layouts) read without NVlabs code.

Each pickle is written by the test itself through stand-in ``torch_utils.persistence`` and
``dnnlib.util`` modules in a temporary folder, so that it names exactly the real globals
(``torch_utils.persistence._reconstruct_persistent_obj``, ``dnnlib.util.EasyDict``,
``torch._utils._rebuild_parameter``, ...) and holds the records of vectors/README.md §3.2: one
persistent record per module, ``state`` = the module's ``__dict__`` with ``_parameters``,
``_buffers``, ``_modules`` (nested records), ``_init_kwargs``, and a ``module_src`` that would
write a marker file if anyone executed it. The stand-ins are removed before loading, and an
import watcher proves that nothing named ``torch_utils``/``dnnlib`` is imported while reading.
The weights are the reference generators of ../shared/vectors, so the loaded generators are
also compared with the official outputs.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import pickle
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_reference

import invkit
from invkit.adapters import nvlabs
from invkit.io.checkpoint import CheckpointError, CheckpointFile
from invkit.io.safe_pickle import PickleFormatError, UnsafePickleError
from invkit.loading import identify

NVLABS_PACKAGES = ("torch_utils", "dnnlib")

STANDIN_FILES = {
    "torch_utils/__init__.py": "",
    "torch_utils/persistence.py": '''
        """Stand-in for NVlabs torch_utils.persistence: only what writing a pickle needs."""

        def _reconstruct_persistent_obj(meta):
            raise RuntimeError("stand-in: a reader must never call this")

        class Persistent:
            """Pickles as the real persistent classes do: a call of the reconstructor on meta."""

            def __init__(self, meta):
                self.meta = meta

            def __reduce__(self):
                return (_reconstruct_persistent_obj, (self.meta,), None)
    ''',
    "dnnlib/__init__.py": "from .util import EasyDict\n",
    "dnnlib/util.py": '''
        class EasyDict(dict):
            def __getattr__(self, name):
                try:
                    return self[name]
                except KeyError:
                    raise AttributeError(name)

            def __setattr__(self, name, value):
                self[name] = value
    ''',
}


@contextlib.contextmanager
def standin_modules(root: Path):
    """Import the stand-ins from ``root``; afterwards remove them from sys.modules/sys.path."""
    for rel, text in STANDIN_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module("torch_utils.persistence"), importlib.import_module("dnnlib.util")
    finally:
        sys.path.remove(str(root))
        for name in list(sys.modules):
            if name.split(".")[0] in NVLABS_PACKAGES:
                del sys.modules[name]
        importlib.invalidate_caches()


class ImportWatch(importlib.abc.MetaPathFinder):
    """Records (and blocks) every attempt to import NVlabs packages."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in NVLABS_PACKAGES:
            self.attempts.append(fullname)
            raise ImportError(f"test forbids importing {fullname}")
        return None


@pytest.fixture
def no_nvlabs_code():
    """While the test reads: no NVlabs package importable; after it: none was even tried."""
    assert not any(n.split(".")[0] in NVLABS_PACKAGES for n in sys.modules)
    watch = ImportWatch()
    sys.meta_path.insert(0, watch)
    try:
        yield watch
    finally:
        sys.meta_path.remove(watch)
    assert watch.attempts == [], f"reader imported {watch.attempts}"


# ---- building the records ----------------------------------------------------------------------

SG2_CLASSES = ["FullyConnectedLayer", "MappingNetwork", "SynthesisLayer", "ToRGBLayer", "SynthesisBlock",
               "SynthesisNetwork", "Generator", "DiscriminatorBlock", "Discriminator"]
SG3_CLASSES = ["FullyConnectedLayer", "MappingNetwork", "SynthesisInput", "SynthesisLayer",
               "SynthesisNetwork", "Generator"]
BUFFERS = {"resample_filter", "noise_const", "w_avg", "transform", "freqs", "phases", "magnitude_ema",
           "up_filter", "down_filter", "p"}


def armed_source(classes: list[str], marker: Path) -> str:
    """A module source that writes ``marker`` (and runs a shell command) when executed."""
    head = [
        "import os",
        "import torch",
        f"open({str(marker)!r}, 'w').write('module_src was executed')",
        f"os.system('touch {marker}.shell')",
    ]
    body = [f"\n\nclass {c}(torch.nn.Module):\n    pass" for c in classes]
    return "\n".join(head) + "".join(body) + "\n"


def class_of(path: str) -> str:
    last = path.rsplit(".", 1)[-1]
    if path == "":
        return "Generator"
    if path in ("mapping", "synthesis"):
        return {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork"}[path]
    if last == "affine" or last.startswith("fc") or last == "embed":
        return "FullyConnectedLayer"
    if last == "input":
        return "SynthesisInput"
    if last == "torgb":
        return "ToRGBLayer"
    if last.startswith("b") and last[1:].isdigit():
        return "SynthesisBlock"
    return "SynthesisLayer"


def module_tree(state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Real ``nn.Module`` objects holding ``state_dict`` (parameters vs buffers by name)."""
    root = torch.nn.Module()
    for key, value in state_dict.items():
        *parts, leaf = key.split(".")
        node = root
        for part in parts:
            if part not in node._modules:
                node.add_module(part, torch.nn.Module())
            node = node._modules[part]
        if leaf in BUFFERS:
            node.register_buffer(leaf, value.clone())
        else:
            node.register_parameter(leaf, torch.nn.Parameter(value.clone(), requires_grad=False))
    return root


def records(module, persistence, util, src: str, init_kwargs: dict, path: str = "", extra=None):
    """The persistent record a ``@persistent_class`` module pickles as (README §3.2)."""
    state = dict(module.__dict__)  # training, _parameters, _buffers, hooks..., _modules
    state["_modules"] = OrderedDict(
        (name, records(child, persistence, util, src, {}, f"{path}.{name}".lstrip("."), extra))
        for name, child in module._modules.items()
    )
    state.update((extra or (lambda p: {}))(path))
    state["_init_args"] = ()
    state["_init_kwargs"] = easydict(util, init_kwargs)
    meta = dict(type="class", version=6, module_src=src, class_name=class_of(path), state=state)
    return persistence.Persistent(meta)


def easydict(util, value):
    if isinstance(value, dict):
        return util.EasyDict({k: easydict(util, v) for k, v in value.items()})
    return value


def sg3_attributes(path: str) -> dict:
    """Plain attributes like the real SynthesisLayer keeps (numpy arrays and scalars)."""
    if class_of(path) != "SynthesisLayer":
        return {}
    return {"in_size": np.broadcast_to(np.asarray(36), [2]), "in_sampling_rate": np.float64(16.0),
            "conv_kernel": 3, "is_torgb": False, "use_fp16": False}


def write_snapshot(path: Path, root: Path, state_dict: dict, init_kwargs: dict, classes: list[str],
                   marker: Path, protocol: int, numpy1_names: bool = False, extra=None,
                   bare: bool = False) -> None:
    """A training snapshot ``dict(G, D, G_ema, augment_pipe, training_set_kwargs)`` like
    ``training_loop.py`` writes (``bare``: just the ``G_ema`` record)."""
    src = armed_source(classes, marker)
    with standin_modules(root) as (persistence, util):
        g_ema = records(module_tree(state_dict), persistence, util, src, init_kwargs, extra=extra)
        g_train = records(module_tree({k: v + 1.0 for k, v in state_dict.items()}), persistence, util, src,
                          init_kwargs, extra=extra)
        d = records(module_tree({"b8.conv0.weight": torch.randn(4, 4, 3, 3), "b8.conv0.bias": torch.randn(4)}),
                    persistence, util, src, {"c_dim": 0, "img_resolution": 8})
        meta_d = d.meta
        meta_d["class_name"] = "Discriminator"
        pipe = records(module_tree({"p": torch.zeros([])}), persistence, util, src, {"xflip": 1})
        pipe.meta["class_name"] = "AugmentPipe"
        snapshot = dict(G=g_train, D=d, G_ema=g_ema, augment_pipe=pipe,
                        training_set_kwargs=util.EasyDict(class_name="training.dataset.ImageFolderDataset",
                                                          path="ffhq.zip", use_labels=False, xflip=True))
        data = pickle.dumps(g_ema if bare else snapshot, protocol=protocol)
    if numpy1_names:  # the 2021 release pickles were written by numpy 1.x
        assert protocol < 4, "text GLOBAL opcodes only"
        data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    path.write_bytes(data)


# ---- the reference generators in each repository's layout ------------------------------------

SG2_ADA = "nvlabs_stylegan2_ada"


def flat_kwargs(nested: dict) -> dict:
    """stylegan3-repo layout: the synthesis kwargs next to the others."""
    out = {k: v for k, v in nested.items() if k != "synthesis_kwargs"}
    out.update(nested["synthesis_kwargs"])
    return out


CASES = {
    # name: (reference family, kwargs transform, classes, protocol, numpy 1.x names, module, family)
    "stylegan2-ada": (SG2_ADA, None, SG2_CLASSES, 3, True, "training.networks", "stylegan2"),
    "stylegan3-repo-stylegan2": (SG2_ADA, flat_kwargs, SG2_CLASSES, 4, False,
                                 "training.networks_stylegan2", "stylegan2"),
    "stylegan3-t": ("nvlabs_stylegan3_t", None, SG3_CLASSES, 4, False, "training.networks_stylegan3",
                    "stylegan3"),
    "stylegan3-r": ("nvlabs_stylegan3_r", None, SG3_CLASSES, 5, False, "training.networks_stylegan3",
                    "stylegan3"),
}


def make_case(name: str, tmp_path: Path, vectors_root: Path, bare: bool = False):
    ref_family, transform, classes, protocol, numpy1, module, family = CASES[name]
    ref = load_reference(vectors_root, ref_family, "G")
    kwargs = ref["config"]["init_kwargs"]
    kwargs = transform(kwargs) if transform else kwargs
    pkl = tmp_path / f"{name}.pkl"
    marker = tmp_path / "executed.txt"
    extra = sg3_attributes if family == "stylegan3" else None
    write_snapshot(pkl, tmp_path / "standins", ref["state_dict"], kwargs, classes, marker, protocol,
                   numpy1, extra=extra, bare=bare)
    return pkl, ref, kwargs, marker, module, family


def assert_same_state(got: dict, want: dict) -> None:
    assert list(got) == list(want)  # same keys, same (official) order
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        assert torch.equal(got[key], value), key


def assert_not_executed(marker: Path) -> None:
    assert not marker.exists() and not Path(f"{marker}.shell").exists(), "embedded source was executed"


# ---- tests -------------------------------------------------------------------------------------


def test_armed_source_would_act(tmp_path):
    """The marker mechanism works, so the 'not executed' checks below can fail."""
    marker = tmp_path / "ran.txt"
    exec(compile(armed_source(["Generator"], marker), "<armed>", "exec"), {})  # noqa: S102
    assert marker.exists() and Path(f"{marker}.shell").exists()


@pytest.mark.parametrize("case", list(CASES))
def test_reads_state_dict_and_kwargs_without_nvlabs_code(case, tmp_path, vectors_root, request):
    pkl, ref, kwargs, marker, module, family = make_case(case, tmp_path, vectors_root)
    request.getfixturevalue("no_nvlabs_code")
    net = nvlabs.read_network(CheckpointFile(pkl))
    assert_same_state(net.state_dict, ref["state_dict"])  # G_ema, not G (whose values are +1)
    assert net.init_kwargs == kwargs
    assert net.class_name == "Generator"
    assert net.module_name == module and net.family == family
    assert net.source_format == "nvlabs-pickle"
    assert_not_executed(marker)


@pytest.mark.parametrize("case", ["stylegan2-ada", "stylegan3-t"])
def test_identify_and_cache(case, tmp_path, vectors_root, request):
    pkl, *_, marker, _, family = make_case(case, tmp_path, vectors_root)
    request.getfixturevalue("no_nvlabs_code")
    checkpoint = CheckpointFile(pkl)
    assert checkpoint.format == "pickle"
    assert identify(checkpoint) == family  # through the plugin hook
    net = checkpoint.cache[nvlabs.CACHE_KEY]
    assert nvlabs.read_network(checkpoint) is net  # parsed once
    assert_not_executed(marker)


def test_bare_generator_record(tmp_path, vectors_root, request):
    pkl, ref, kwargs, marker, *_ = make_case("stylegan3-t", tmp_path, vectors_root, bare=True)
    request.getfixturevalue("no_nvlabs_code")
    net = nvlabs.read_network(pkl)
    assert_same_state(net.state_dict, ref["state_dict"])
    assert net.init_kwargs == kwargs


def test_non_persistent_buffers_and_positional_args(tmp_path):
    """Follows ``Module.state_dict()``: no non-persistent buffers; ``_init_args`` become kwargs."""
    sd = {"synthesis.b4.const": torch.randn(8, 4, 4), "mapping.w_avg": torch.randn(8)}
    with standin_modules(tmp_path / "standins") as (persistence, util):
        tree = module_tree(sd)
        tree._modules["mapping"].register_buffer("scratch", torch.ones(3), persistent=False)
        rec = records(tree, persistence, util, "class SynthesisBlock: pass\n", {"mapping_kwargs": {}})
        rec.meta["state"]["_init_args"] = (8, 0, 8, 4, 3)
        data = pickle.dumps({"G_ema": rec}, protocol=4)
    net = nvlabs.network_from_pickle(nvlabs.safe_pickle.loads(data, nvlabs.ALLOWED), "mem.pkl")
    assert list(net.state_dict) == ["synthesis.b4.const", "mapping.w_avg"]
    assert net.init_kwargs == {"mapping_kwargs": {}, "z_dim": 8, "c_dim": 0, "w_dim": 8,
                               "img_resolution": 4, "img_channels": 3}
    assert net.module_name == "training.networks_stylegan2"


def test_wrong_networks_are_refused(tmp_path, vectors_root):
    ref = load_reference(vectors_root, SG2_ADA, "G")
    with standin_modules(tmp_path / "standins") as (persistence, util):
        d = records(module_tree({"b8.conv0.weight": torch.randn(2, 2, 3, 3)}), persistence, util, "", {})
        d.meta["class_name"] = "Discriminator"
        only_d = pickle.dumps({"G_ema": d}, protocol=4)
        mixed = records(module_tree(ref["state_dict"]), persistence, util,
                        armed_source(SG3_CLASSES, tmp_path / "m"), ref["config"]["init_kwargs"])
        mixed = pickle.dumps({"G_ema": mixed}, protocol=4)
        plain = pickle.dumps({"weights": torch.zeros(2)}, protocol=4)
    for data, message in [(only_d, "'Discriminator', expected a Generator"),
                          (mixed, "does not define SynthesisBlock"),
                          (plain, "not an NVlabs network pickle")]:
        path = tmp_path / "x.pkl"
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=message) as info:
            invkit.load_generator(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


class _Payload:
    """Pickles as a call of ``func(*args)`` (what a malicious pickle does)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def test_malicious_global_inside_a_generator_record(tmp_path, vectors_root, request):
    """A REDUCE of ``os.system`` hidden in a module's state: nothing loads, nothing runs."""
    import os

    marker = tmp_path / "pwned.txt"
    ref = load_reference(vectors_root, SG2_ADA, "G")
    with standin_modules(tmp_path / "standins") as (persistence, util):
        rec = records(module_tree(ref["state_dict"]), persistence, util, "class SynthesisBlock: pass\n",
                      ref["config"]["init_kwargs"])
        rec.meta["state"]["_modules"]["synthesis"].meta["state"]["hook"] = _Payload(os.system, f"touch {marker}")
        data = pickle.dumps({"G_ema": rec}, protocol=4)
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    request.getfixturevalue("no_nvlabs_code")
    with pytest.raises(UnsafePickleError) as info:
        invkit.load_generator(path)
    message = str(info.value)
    assert f"'{os.system.__module__}.system'" in message and str(path) in message and "\n" not in message
    assert not marker.exists()


def test_truncated_and_corrupt_pickles(tmp_path, vectors_root):
    pkl, *_ = make_case("stylegan3-t", tmp_path, vectors_root)
    data = pkl.read_bytes()
    bad = {
        "truncated.pkl": data[: len(data) // 2],
        "header-only.pkl": data[:2],
        "corrupt.pkl": data[:2] + b"\xff" * 64 + data[66:],
    }
    for name, content in bad.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(PickleFormatError) as info:
            invkit.load_generator(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert "truncated" in message or "corrupt" in message


# ---- end to end: the adapters reproduce the official outputs from the pickles -----------------

TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_load_generator_reproduces_reference(case, tmp_path, vectors_root, request):
    """``invkit.load_generator("x.pkl")`` equals the official network: ws for all seeds at both
    truncations, images for one seed each (batch size moves results by < 1e-5, README §7)."""
    pkl, ref, *_, marker, _, family = make_case(case, tmp_path, vectors_root)
    vectors = load_reference(vectors_root, CASES[case][0], "vectors")
    request.getfixturevalue("no_nvlabs_code")
    G = invkit.load_generator(pkl)
    assert G.adapter_name == family
    with torch.no_grad():
        for psi in (1.0, 0.7):
            torch.testing.assert_close(G.mapping(vectors["z"], truncation_psi=psi), vectors[f"ws_psi{psi}"], **TOL)
        checks = [("img_psi0.7", "ws_psi0.7", 0, "const")]
        if "img_psi1.0_noise_none" in vectors:
            checks.append(("img_psi1.0_noise_none", "ws_psi1.0", 1, "none"))
        for img_key, ws_key, i, noise_mode in checks:
            img = G.synthesize(vectors[ws_key][i : i + 1], noise_mode=noise_mode)
            torch.testing.assert_close(img, vectors[img_key][i : i + 1], **TOL)
    assert_not_executed(marker)
