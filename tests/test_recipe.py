"""The typed recipe config: JSON round-trip, key=value overrides, the domain recipes, the CLI."""

from __future__ import annotations

import json

import pytest

from invkit import plugins
from invkit.cli import main as cli_main
from invkit.losses import LossWeights
from invkit.recipe import EncoderSpec, Preprocess, Recipe, RecipeError, Schedule, get_recipe


def _custom() -> Recipe:
    return Recipe(
        name="custom", generator="g.pkl", k=4,
        loss=LossWeights(mse=0.5, lpips=0.3, feature=0.02, identity=0.0, parsing=0.0),
        preprocess=Preprocess(resize=(24, 32), pad_to=(32, 32), pad_value=-0.5, hflip=True),
        schedule=Schedule(batch_real=3, batch_synthetic=1, epochs=3, iters_per_epoch=7, lr=3e-4,
                          optimizer="adam", betas=(0.9, 0.99), grad_clip=1.5),
        encoder=EncoderSpec(depths=(1, 2, 1, 1), widths=(8, 8, 16, 16), stem_width=8, input_size=32),
        blend_warmup_steps=5, keep_last=2,
    )


def test_json_round_trip_preserves_every_type(tmp_path):
    r = _custom()
    path = r.save(tmp_path / "r.json")
    back = Recipe.load(path)
    assert back == r
    assert isinstance(back.schedule.betas, tuple) and isinstance(back.preprocess.resize, tuple)
    assert isinstance(back.loss, LossWeights)
    assert json.loads(path.read_text())["schedule"]["betas"] == [0.9, 0.99]


def test_unknown_and_mistyped_json_keys_are_refused():
    data = _custom().to_dict()
    data["schedule"]["lrr"] = 1
    with pytest.raises(RecipeError, match="schedule.lrr"):
        Recipe.from_dict(data)
    data = _custom().to_dict()
    data["schedule"]["epochs"] = "twelve"
    with pytest.raises(RecipeError, match="schedule.epochs: expected an integer"):
        Recipe.from_dict(data)
    data = _custom().to_dict()
    data["preprocess"]["resize"] = [1, 2, 3]
    with pytest.raises(RecipeError, match="preprocess.resize"):
        Recipe.from_dict(data)


def test_overrides_are_parsed_for_the_field_type():
    r = _custom().with_overrides([
        "schedule.lr=5e-5", "schedule.iters_per_epoch=10_000", "schedule.epochs=2e1",
        "schedule.grad_clip=none", "schedule.optimizer=ranger", "preprocess.hflip=off",
        "preprocess.resize=384x512", "preprocess.pad_to=[512, 512]", "loss.lpips=0.5",
        "schedule.betas=0.95,0.999", "encoder.feature_stride=2", "name=renamed",
    ])
    assert r.schedule.lr == 5e-5 and r.schedule.iters_per_epoch == 10_000 and r.schedule.epochs == 20
    assert r.schedule.grad_clip is None and r.schedule.optimizer == "ranger"
    assert r.preprocess.hflip is False and r.preprocess.resize == (384, 512) and r.preprocess.pad_to == (512, 512)
    assert r.loss.lpips == 0.5 and r.schedule.betas == (0.95, 0.999) and r.encoder.feature_stride == 2
    assert r.name == "renamed"
    diff = _custom().diff(r)
    assert diff["schedule.lr"] == (3e-4, 5e-5) and "k" not in diff


@pytest.mark.parametrize("override, message", [
    ("schedule.lrr=1", "did you mean 'schedule.lr'"),
    ("shedule.lr=1", "did you mean 'schedule'"),
    ("schedule.lr=fast", "expected a number"),
    ("k=1.5", "expected an integer"),
    ("schedule.optimizer=sgd", "expected one of ranger, radam, adam"),
    ("preprocess.hflip=maybe", "true or false"),
    ("loss=1", "loss is a section"),
    ("k.x=1", "k is not a section"),
    ("keep_last", "expected key=value"),
    ("keep_last=0", "keep_last must be >= 1"),
    ("preprocess.pad_to=16,16", "pad_to must be at least as large"),
    ("loss.lpips=-1", "loss weights must be >= 0"),
])
def test_bad_overrides_give_one_clear_error(override, message):
    with pytest.raises(RecipeError, match=message):
        _custom().with_overrides([override])


def test_schedule_defaults_are_the_papers():
    s = Schedule()
    assert (s.batch_real, s.batch_synthetic, s.epochs, s.iters_per_epoch, s.lr) == (2, 2, 12, 10_000, 1e-4)
    assert s.total_steps == 120_000 and s.lr_drop_step == 100_000 and s.lr_drop_factor == 10
    assert s.optimizer == "ranger"


def test_domain_recipes_are_registered_through_the_plugin_hook():
    names = plugins.list_recipes()
    for name in ("faces", "cars", "cats", "dogs"):
        assert name in names
        assert plugins.recipes().get(name).plugin == "domains"
    faces, cars, cats, dogs = (get_recipe(n) for n in ("faces", "cars", "cats", "dogs"))
    assert faces.generator == "stylegan2-ffhq-1024" and faces.k == 5 and faces.preprocess.align == "ffhq"
    assert faces.loss.identity > 0 and faces.loss.parsing > 0  # Eq. 8
    assert cars.generator == "stylegan2-car-config-f"
    assert cars.preprocess.resize == (384, 512) and cars.preprocess.pad_to == (512, 512)
    for r in (cars, cats, dogs):  # Eq. 5
        assert r.loss.identity == 0 and r.loss.parsing == 0 and r.loss.lpips == 0.2 and r.loss.feature == 0.01
    assert cats.generator == "stylegan2-ada-afhqcat-512" and dogs.generator == "stylegan2-ada-afhqdog-512"
    from invkit.io import zoo

    for r in (faces, cars, cats, dogs):
        assert zoo.has(r.generator) and zoo.get(r.generator).defaults.get("recipe") == r.name
    # recipe factories hand out independent objects
    faces.loss.lpips = 9.0
    assert get_recipe("faces").loss.lpips == 0.2


def test_get_recipe_reads_json_files_and_names_unknown_ones(tmp_path):
    path = _custom().save(tmp_path / "mine.json")
    assert get_recipe(str(path)) == _custom()
    with pytest.raises(KeyError, match="unknown recipe 'nope'"):
        get_recipe("nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RecipeError, match="bad.json: not valid JSON"):
        get_recipe(str(bad))


def test_cli_lists_recipes_and_prints_one(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # a wide table: no folded cells
    assert cli_main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in ("faces", "cars", "cats", "dogs", "stylegan2-ffhq-1024"):
        assert name in out
    assert cli_main(["recipes", "cars", "--set", "schedule.lr=3e-5"]) == 0
    printed = Recipe.from_json(capsys.readouterr().out)
    assert printed.schedule.lr == 3e-5 and printed.preprocess.pad_to == (512, 512)
    assert cli_main(["recipes", "cars", "--set", "schedule.lr=x"]) == 1
    assert "expected a number" in capsys.readouterr().err
