"""The restricted unpickler: allowed content round-trips; anything that could act is refused
before it runs (the side effect is checked), and bad data gives a one-line error naming the file."""

from __future__ import annotations

import collections
import os
import pickle
import warnings

import numpy as np
import pytest
import torch

from invkit.io import safe_pickle
from invkit.io.safe_pickle import PickleFormatError, UnsafePickleError

ALLOWED = safe_pickle.allow_list()


class Call:
    """Pickles as ``func(*args)`` -- exactly what a malicious pickle does."""

    def __init__(self, func, *args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def global_call(module: str, name: str, *args) -> bytes:
    """A protocol-2 pickle that imports ``module.name`` and calls it with ``args``."""
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + pickle.dumps(args, protocol=2)[2:-1] + b"R."


def sample_objects() -> dict:
    base = torch.arange(24.0).reshape(2, 3, 4)
    return {
        "param": torch.nn.Parameter(torch.randn(3, 4), requires_grad=False),
        "half": torch.randn(5).half(),
        "long": torch.arange(7),
        "scalar_tensor": torch.tensor(2.5),
        "view": base.permute(2, 0, 1)[1:, :, ::2],
        "shares_storage": base,
        "empty": torch.zeros(0, 3),
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "big_endian": np.arange(4, dtype=">f4"),
        "bools": np.array([True, False]),
        "broadcast": np.broadcast_to(np.asarray(36), [2]),
        "np_float": np.float64(0.25),
        "np_int": np.int64(-3),
        "np_big": np.dtype(">f8").type(3.0),
        "set": {1, 2},
        "frozenset": frozenset({"a"}),
        "complex": 1 + 2j,
        "bytes": b"\x00\xffabc",
        "ordered": collections.OrderedDict(x=1, y=[1, 2]),
        "nested": [(1, "two"), {"three": 3.0}],
        "dtype": torch.float16,
    }


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_allowed_content_round_trips(protocol):
    objs = sample_objects()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation inside torch's own pickling
        data = pickle.dumps(objs, protocol=protocol)
    out = safe_pickle.loads(data, ALLOWED, "mem.pkl")
    assert list(out) == list(objs)
    for key, want in objs.items():
        got = out[key]
        if isinstance(want, torch.Tensor):
            assert type(got) is torch.Tensor, key  # parameters come back as plain tensors
            assert got.dtype == want.dtype and torch.equal(got, want.detach()), key
        elif isinstance(want, np.ndarray):
            assert type(got) is np.ndarray, key
            assert got.dtype.newbyteorder("=") == want.dtype.newbyteorder("=") and np.array_equal(got, want), key
        else:
            assert type(got) is type(want) and got == want, key
    assert np.dtype("f4").byteorder == "=" and np.dtype("f8").byteorder == "="  # no singleton mutated


# ---- refusals: nothing runs --------------------------------------------------------------------


def attacks(marker) -> dict[str, bytes]:
    shell = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    return {
        "os.system": global_call("os", "system", shell),
        "posix.system": global_call("posix", "system", shell),
        "builtins.exec": global_call("builtins", "exec", code),
        "builtins.eval": global_call("builtins", "eval", code),
        "__builtin__.eval": global_call("__builtin__", "eval", code),
        "builtins.__import__": global_call("builtins", "__import__", "os"),
        "builtins.getattr": global_call("builtins", "getattr", 1, "real"),
        "builtins.open": global_call("builtins", "open", str(marker), "w"),
        "subprocess.check_call": global_call("subprocess", "check_call", ["touch", str(marker)]),
        "subprocess.Popen": global_call("subprocess", "Popen", ["touch", str(marker)]),
        "importlib.import_module": global_call("importlib", "import_module", "os"),
        "runpy.run_path": global_call("runpy", "run_path", "/dev/null"),
        "pickle.loads": global_call("pickle", "loads", global_call("os", "system", shell)),
        "torch.load": global_call("torch", "load", str(marker)),
        "numpy.load": global_call("numpy", "load", str(marker)),
        "torch.storage._load_from_bytes.__globals__": global_call("torch.storage", "_load_from_bytes.__globals__"),
        # protocol 4 names globals with the STACK_GLOBAL opcode; resolved the same way
        f"{os.system.__module__}.system": pickle.dumps(Call(os.system, shell), protocol=4),
    }


def test_the_attacks_are_real(tmp_path):
    """Plain ``pickle.loads`` of two of the payloads does act, so the refusal tests can fail."""
    for name in ("os.system", "builtins.exec"):
        marker = tmp_path / f"{name}.txt"
        pickle.loads(attacks(marker)[name])  # noqa: S301 - this is the control experiment
        assert marker.exists(), name


@pytest.mark.parametrize("name", list(attacks("m")))
def test_refuses_globals_outside_the_allow_list(name, tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pkl"
    path.write_bytes(attacks(marker)[name])
    with pytest.raises(UnsafePickleError) as info:
        safe_pickle.load(path, ALLOWED)
    message = str(info.value)
    assert f"'{name}'" in message and info.value.global_name == name
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert not marker.exists()


def test_refuses_code_inside_an_embedded_torch_storage(tmp_path):
    """``_load_from_bytes`` bytes are read with ``weights_only=True``, never ``False``."""
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pkl"
    inner = global_call("os", "system", f"touch {marker}")
    path.write_bytes(pickle.dumps(Call(torch.storage._load_from_bytes, inner), protocol=4))
    with pytest.raises(UnsafePickleError, match="'os.system'.*embedded torch storage"):
        safe_pickle.load(path, ALLOWED)
    assert not marker.exists()


def test_refuses_persistent_ids():
    data = b"\x80\x02(X\x03\x00\x00\x00pidtQ."  # BINPERSID
    with pytest.raises(UnsafePickleError, match="persistent"):
        safe_pickle.loads(data, ALLOWED, "p.pkl")


# ---- validation of allowed globals -------------------------------------------------------------


def test_validation_of_allowed_globals():
    reconstruct = np._core.multiarray._reconstruct
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = torch.zeros(4).storage()
    bad = {  # name: (fragment of the expected message, pickle)
        "object dtype": ("'O8' is not a plain numeric", pickle.dumps(np.array([1, "a"], dtype=object), protocol=4)),
        "structured dtype": ("'V4' is not a plain numeric", pickle.dumps(np.zeros(2, dtype=[("a", "f4")]), protocol=4)),
        "dtype with fields": ("structured numpy dtypes", pickle.dumps(
            Call(np.dtype, "f4", False, True, state=(3, "<", None, ("a",), {"a": (np.dtype("f4"), 0)}, 4, 1, 0)),
            protocol=4)),
        "short payload": ("8 bytes does not fit shape (10,)", pickle.dumps(
            Call(reconstruct, np.ndarray, (0,), b"b", state=(1, (10,), np.dtype("f4"), False, b"\0" * 8)),
            protocol=4)),
        "overflowing shape": ("0 bytes does not fit shape (4294967296, 4294967296)", pickle.dumps(
            Call(reconstruct, np.ndarray, (0,), b"b", state=(1, (2**32, 2**32), np.dtype("f4"), False, b"")),
            protocol=4)),
        "codecs": ("latin-1", global_call("_codecs", "encode", "abc", "rot13")),
        "tensor past storage": ("reaches past its storage", pickle.dumps(
            Call(torch._utils._rebuild_tensor_v2, storage, 0, (100,), (1,), False, collections.OrderedDict()),
            protocol=4)),
        "tensor hooks": ("backward hooks", pickle.dumps(
            Call(torch._utils._rebuild_tensor_v2, storage, 0, (4,), (1,), False, collections.OrderedDict(h=1)),
            protocol=4)),
        "ndarray call": ("not callable", pickle.dumps(Call(np.ndarray, (3,)), protocol=4)),
        "storage payload": ("corrupt torch storage",
                            pickle.dumps(Call(torch.storage._load_from_bytes, b"not a torch file"), protocol=4)),
    }
    for what, (fragment, data) in bad.items():
        with pytest.raises(PickleFormatError) as info:
            safe_pickle.loads(data, ALLOWED, "bad.pkl")
        message = str(info.value)
        assert message.startswith("bad.pkl: ") and fragment in message and "\n" not in message, what


def test_truncated_and_corrupt(tmp_path):
    data = pickle.dumps({"w": torch.randn(4, 4), "a": np.ones(3)}, protocol=4)
    cases = {"truncated": data[: len(data) // 2], "header only": data[:2],
             "garbage": data[:2] + bytes(range(200, 256)) * 4, "empty": b""}
    for what, content in cases.items():
        path = tmp_path / "x.pkl"
        path.write_bytes(content)
        with pytest.raises(PickleFormatError) as info:
            safe_pickle.load(path, ALLOWED)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, what
        assert "truncated" in message or "corrupt" in message, what


def test_missing_file_and_remapping(tmp_path):
    with pytest.raises(safe_pickle.CheckpointError, match="cannot read"):
        safe_pickle.load(tmp_path / "nope.pkl", ALLOWED)
    with pytest.raises(ValueError, match="cannot be remapped"):
        safe_pickle.allow_list({("torch.storage", "_load_from_bytes"): lambda b: b})
