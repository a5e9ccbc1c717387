"""InterFaceGAN: planted-direction recovery, the sampling protocol, conditional manipulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invkit.direction import Direction
from invkit.editors.interfacegan import (
    InterFaceGANEditor,
    condition,
    fit_linear,
    project_orthogonal,
    sample_split,
)
from invkit.inversion import Inversion

NUM_WS, W_DIM = 4, 16


def _planted(n: int, seed: int = 0, noise: float = 0.3):
    """W+ codes ``[n, 4, 16]`` with a planted unit direction ``[4, 16]``; scores = projection + noise."""
    g = torch.Generator().manual_seed(seed)
    # anisotropic codes with an offset, like real W codes (not centred, not white)
    scale = torch.rand(NUM_WS * W_DIM, generator=g) * 1.5 + 0.5
    ws = (torch.randn(n, NUM_WS * W_DIM, generator=g) * scale + 0.7).reshape(n, NUM_WS, W_DIM)
    planted = torch.randn(NUM_WS, W_DIM, generator=g)
    planted /= planted.norm()
    scores = (ws * planted).sum(dim=(1, 2)) + noise * torch.randn(n, generator=g)
    return ws, planted, scores


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("method", ["svm", "logistic"])
def test_recovers_planted_direction_from_continuous_scores(method):
    ws, planted, scores = _planted(4000)
    inv = Inversion(ws, torch.zeros(len(ws), 1, 2, 2), 2, "abc123", [f"img{i}" for i in range(len(ws))])
    (d,) = InterFaceGANEditor().fit(codes=inv, labels=scores, attribute="smiling", method=method, ratio=0.25)
    assert d.space == "w+" and d.vector.shape == (NUM_WS, W_DIM)
    assert d.generator_fingerprint == "abc123" and d.attribute == "smiling" and d.editor == "interfacegan"
    assert math.isclose(float(d.vector.norm()), 1.0, rel_tol=1e-6)
    assert _cos(d.vector, planted) >= 0.95
    assert d.stats["val_accuracy"] >= 0.97
    # protocol bookkeeping: 25% at each end, 70/30 split, the middle 50% is 'remaining'
    assert d.stats["n_train"] == 2 * int(1000 * 0.7) and d.stats["n_val"] == 2 * (1000 - 700)
    assert d.stats["n_remaining"] == 2000


def test_recovers_planted_direction_from_binary_labels_in_w():
    ws, planted, scores = _planted(3000, seed=1)
    w = ws[:, 0]  # plain W codes [N, w_dim]
    planted_w = torch.randn(W_DIM, generator=torch.Generator().manual_seed(5))
    planted_w /= planted_w.norm()
    labels = ((w - w.mean(0)) @ planted_w + 0.2 * torch.randn(len(w)) > 0).float()
    (d,) = InterFaceGANEditor().fit(codes=w, labels=labels, attribute="glasses", space="w",
                                    generator_fingerprint="f00")
    assert d.space == "w" and d.vector.shape == (W_DIM,)
    assert _cos(d.vector, planted_w) >= 0.95
    assert d.stats["n_remaining"] == 0  # binary labels: every labelled code is used


def test_layer_restricted_boundary_is_zero_outside_its_rows():
    ws, planted, _ = _planted(3000, seed=2)
    planted[2:] = 0  # the attribute lives in rows 0-1 only
    planted /= planted.norm()
    scores = (ws * planted).sum(dim=(1, 2))
    (d,) = InterFaceGANEditor().fit(codes=ws, labels=scores, layers=[0, 1], ratio=0.3,
                                    generator_fingerprint="f00")
    assert d.layers == [0, 1]
    assert torch.count_nonzero(d.vector[2:]) == 0
    assert _cos(d.vector, planted) >= 0.95


def test_unlabelled_codes_are_skipped():
    ws, planted, scores = _planted(2000, seed=3)
    scores[::3] = float("nan")
    sp = sample_split(scores.numpy(), ratio=0.2, split=0.5)
    used = np.concatenate([sp.train, sp.val, sp.remaining])
    assert not np.isin(np.arange(0, 2000, 3), used).any()
    assert len(set(used.tolist())) == len(used) == int((~torch.isnan(scores)).sum())


def test_protocol_takes_the_extremes_and_refuses_too_few():
    scores = np.arange(100, dtype=float)
    sp = sample_split(scores, ratio=10, split=0.7)
    assert set(sp.train[sp.train_y == 1]).union(sp.val[sp.val_y == 1]) == set(range(90, 100))
    assert set(sp.train[sp.train_y == 0]).union(sp.val[sp.val_y == 0]) == set(range(10))
    with pytest.raises(ValueError, match="raise --ratio"):
        sample_split(scores, ratio=0.01)
    with pytest.raises(ValueError, match="two distinct values"):
        sample_split(np.ones(10))


def test_svm_on_symmetric_data_finds_the_symmetry_axis():
    t = np.linspace(-2, 2, 9)
    x = np.concatenate([np.stack([np.full_like(t, 1.5), t], 1), np.stack([np.full_like(t, -1.5), t], 1)])
    y = np.concatenate([np.ones(9), np.zeros(9)])
    n, b = fit_linear(x, y, "svm", C=10.0)
    assert abs(b) < 1e-6 and abs(n[1]) < 1e-6 and n[0] > 0
    # squared hinge at the optimum: 1/(1+C·2·Σ...) shrinks the margin slightly below 1
    assert 0.9 < n[0] * 1.5 <= 1.0 + 1e-6


@pytest.mark.parametrize("method", ["svm", "logistic"])
@pytest.mark.parametrize("shape", [(400, 12), (40, 150)])  # D < n (primal Newton), D > n (kernel Newton)
def test_newton_and_lbfgs_reach_the_same_optimum(method, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) * 1.3 + 0.5
    y = (x @ rng.standard_normal(shape[1]) + 0.5 * rng.standard_normal(shape[0]) > 0).astype(float)
    n1, b1 = fit_linear(x, y, method, C=0.5, solver="newton")
    n2, b2 = fit_linear(x, y, method, C=0.5, solver="lbfgs")
    np.testing.assert_allclose(n1, n2, atol=1e-5 * np.abs(n1).max(), rtol=0)
    assert abs(b1 - b2) < 1e-5 * max(1.0, abs(b1))
    with pytest.raises(ValueError, match="unknown solver"):
        fit_linear(x, y, method, solver="sgd")


def test_conditioning_on_one_boundary_is_orthogonal_and_matches_formula():
    g = torch.Generator().manual_seed(0)
    n1, n2 = torch.randn(2, NUM_WS, W_DIM, generator=g)
    n1, n2 = n1 / n1.norm(), n2 / n2.norm()
    out = project_orthogonal(n1, [n2])
    assert abs(float((out.double() * n2.double()).sum())) < 1e-6
    expected = n1.double() - (n1.double() * n2.double()).sum() * n2.double()
    torch.testing.assert_close(out.double(), expected / expected.norm(), atol=1e-6, rtol=0)


def test_conditioning_on_several_boundaries_is_orthogonal_to_each():
    ws, planted, scores = _planted(3000, seed=4)
    editor = InterFaceGANEditor()
    others = []
    for seed in (10, 11):
        g = torch.Generator().manual_seed(seed)
        other = (planted + 0.8 * torch.randn(NUM_WS, W_DIM, generator=g))  # correlated attributes
        other_scores = (ws * other).sum(dim=(1, 2))
        others += editor.fit(codes=ws, labels=other_scores, attribute=f"attr{seed}", ratio=0.25,
                             generator_fingerprint="fp")
    primal, cond = editor.fit(codes=ws, labels=scores, attribute="smiling", ratio=0.25,
                              generator_fingerprint="fp", condition_on=others)
    assert cond.name == "smiling_cond_attr10_attr11"
    assert math.isclose(float(cond.vector.norm()), 1.0, rel_tol=1e-6)
    for o in others:
        assert abs(float((cond.vector.double() * o.vector.double()).sum())) < 1e-6
        assert abs(float((primal.vector.double() * o.vector.double()).sum())) > 0.1  # it was not already
    assert cond.stats["conditioned_on"] == ["attr10", "attr11"]


def test_conditioning_refuses_mismatched_directions():
    d = Direction(torch.ones(NUM_WS, W_DIM) / 8, "w+", "a", "interfacegan", "fp")
    with pytest.raises(ValueError, match="cannot condition W\\+ direction"):
        condition(d, [Direction(torch.ones(W_DIM) / 4, "w", "b", "interfacegan", "fp")])
    with pytest.raises(ValueError, match="belongs to generator"):
        condition(d, [Direction(torch.ones(NUM_WS, W_DIM) / 8, "w+", "b", "interfacegan", "other")])
    with pytest.raises(ValueError, match="span"):
        condition(d, [d])


def test_fit_refuses_bad_inputs():
    ws, _, scores = _planted(200)
    editor = InterFaceGANEditor()
    with pytest.raises(ValueError, match="generator_fingerprint"):
        editor.fit(codes=ws, labels=scores)
    with pytest.raises(ValueError, match="199 labels for 200 codes"):
        editor.fit(codes=ws, labels=scores[:199], generator_fingerprint="fp")
    with pytest.raises(ValueError, match="W codes"):
        editor.fit(codes=ws[:, 0], labels=scores, generator_fingerprint="fp", space="w+")


# ---- the command line -------------------------------------------------------------------------
def _write_codes_and_labels(tmp_path, n: int = 1500):
    ws, planted, scores = _planted(n, seed=6)
    names = [f"face{i:04d}.png" for i in range(n)]
    codes = Inversion(ws, torch.zeros(n, 1, 2, 2), 2, "fp1234", names).save(tmp_path / "codes.safetensors")
    labels = tmp_path / "labels.csv"
    lines = ["name,smiling,age"]
    for i, (name, s) in enumerate(zip(names, scores.tolist())):
        stem = name[:-4] if i % 2 else name  # names match exactly or by stem
        lines.append(f"{stem},{'' if i % 50 == 0 else s},{i}")
    labels.write_text("\n".join(lines) + "\n")
    return codes, labels, planted


def test_cli_fits_a_direction_file_from_codes_and_labels(tmp_path):
    from invkit.cli import main

    codes, labels, planted = _write_codes_and_labels(tmp_path)
    out = tmp_path / "dirs"
    args = ["directions", "interfacegan", "--codes", str(codes), "--labels", str(labels),
            "--attribute", "smiling", "--ratio", "0.3", "--out", str(out)]
    assert main(args) == 0
    d = Direction.load(out / "smiling.safetensors")
    assert d.space == "w+" and d.generator_fingerprint == "fp1234" and d.attribute == "smiling"
    assert _cos(d.vector, planted) >= 0.95
    assert d.stats["val_accuracy"] >= 0.95
    assert d.stats["n_train"] + d.stats["n_val"] == 2 * round(0.3 * (1500 - 30))  # 30 blank cells skipped
    assert main(args) == 1  # refuses to overwrite
    assert main([*args, "--overwrite", "--condition-on", str(out / "smiling.safetensors")]) == 1  # span
    assert main(["directions", "interfacegan", "--codes", str(codes), "--labels", str(labels),
                 "--attribute", "age", "--ratio", "0.3", "--out", str(out)]) == 0
    assert main([*args, "--overwrite", "--condition-on", str(out / "age.safetensors")]) == 0
    cond = Direction.load(out / "smiling_cond_age.safetensors")
    age = Direction.load(out / "age.safetensors")
    assert abs(float((cond.vector.double() * age.vector.double()).sum())) < 1e-6


def test_cli_reports_label_file_problems(tmp_path, capsys):
    from invkit.cli import main

    codes, labels, _ = _write_codes_and_labels(tmp_path, n=40)
    base = ["directions", "interfacegan", "--codes", str(codes), "--out", str(tmp_path / "d")]
    assert main([*base, "--labels", str(labels), "--attribute", "glasses"]) == 1
    assert "no column 'glasses' (attributes: smiling, age)" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("name,smiling\nface0000.png,maybe\n")
    assert main([*base, "--labels", str(bad), "--attribute", "smiling"]) == 1
    assert "bad.csv:2: label 'maybe' is not a number" in capsys.readouterr().err.replace("\n", "")
    other = tmp_path / "other.csv"
    other.write_text("name,smiling\nsomeone.png,1\n")
    assert main([*base, "--labels", str(other), "--attribute", "smiling"]) == 1
    assert "none of its names match" in capsys.readouterr().err


def test_conditioned_direction_reports_its_own_accuracy():
    ws, planted, scores = _planted(3000, seed=3)
    inv = Inversion(ws, torch.zeros(len(ws), 1, 2, 2), 2, "abc123", [f"i{i}" for i in range(len(ws))])
    g = torch.Generator().manual_seed(9)
    # conditioning on (nearly) the attribute itself leaves a direction that cannot classify it
    same = Direction(planted + 0.05 * torch.randn(NUM_WS, W_DIM, generator=g), "w+", "same", "x", "abc123")
    unrelated = torch.randn(NUM_WS, W_DIM, generator=g)
    unrelated -= (unrelated * planted).sum() * planted
    other = Direction(unrelated / unrelated.norm(), "w+", "other", "x", "abc123")
    primal, bad = InterFaceGANEditor().fit(codes=inv, labels=scores, attribute="a", ratio=0.25, condition_on=[same])
    _, good = InterFaceGANEditor().fit(codes=inv, labels=scores, attribute="a", ratio=0.25, condition_on=[other])
    assert primal.stats["val_accuracy"] >= 0.97
    assert bad.stats["primal_val_accuracy"] == primal.stats["val_accuracy"]
    assert bad.stats["val_accuracy"] < 0.8
    assert good.stats["val_accuracy"] >= 0.95


def test_cli_warns_about_a_chance_level_boundary(tmp_path, capsys):
    from invkit.cli import main

    codes, labels, _ = _write_codes_and_labels(tmp_path, n=400)
    noise = tmp_path / "noise.csv"
    g = torch.Generator().manual_seed(0)
    rows = [f"face{i:04d}.png,{int(v)}" for i, v in enumerate(torch.randint(0, 2, (400,), generator=g))]
    noise.write_text("name,coin\n" + "\n".join(rows) + "\n")
    base = ["directions", "interfacegan", "--codes", str(codes), "--ratio", "0.5", "--out", str(tmp_path / "d")]
    assert main([*base, "--labels", str(noise), "--attribute", "coin"]) == 0
    err = capsys.readouterr().err
    d = Direction.load(tmp_path / "d" / "coin.safetensors")
    assert d.stats["val_accuracy"] < 0.65
    assert "warning: coin: validation accuracy" in err and "chance level" in err
    assert "chance level" in d.stats["warning"]
    assert main([*base, "--labels", str(labels), "--attribute", "smiling"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert "warning" not in Direction.load(tmp_path / "d" / "smiling.safetensors").stats


def test_cli_table_keeps_long_direction_file_names_whole(tmp_path, capsys, monkeypatch):
    from invkit.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    codes, labels, _ = _write_codes_and_labels(tmp_path, n=300)
    long = "smiling_with_teeth_showing_and_eyes_closed_attribute"
    labels.write_text(labels.read_text().replace("name,smiling,age", f"name,{long},age", 1))
    out = tmp_path / "directions-with-a-long-folder-name"
    assert main(["directions", "interfacegan", "--codes", str(codes), "--labels", str(labels), "--attribute", "age",
                 "--ratio", "0.3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["directions", "interfacegan", "--codes", str(codes), "--labels", str(labels), "--attribute", long,
                 "--ratio", "0.3", "--out", str(out), "--condition-on", str(out / "age.safetensors")]) == 0
    table = capsys.readouterr().out
    for name in (f"{long}.safetensors", f"{long}_cond_age.safetensors"):
        assert (out / name).is_file() and name in table
