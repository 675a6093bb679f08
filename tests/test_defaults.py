"""One default (Config(), make_config(), train.py, make train), old names as aliases, and
every committed record read back as the run it was."""

import argparse
import dataclasses
import json
import re

import pytest

import helpers
from stn.data import protocols
from stn.train import config as C

RECORDS = sorted(helpers.ROOT.glob("results/**/config.json"))


@pytest.fixture(scope="module")
def train():
    return helpers.script("train.py")


def test_config_make_config_and_train_py_default_to_make_trains_run(train):
    config = C.Config()
    assert config == C.make_config() == train.make_run_config(train.parse_args([]), "float32")
    assert (config.model, config.protocol, config.recipe) == (
        C.MODEL_PRESETS["pooled"], "predecessor", "upright")
    assert (config.seed, config.model.dtype, config.model.input_size) == (0, "float32", 40)
    upright = C.RECIPES["upright"]
    assert all(getattr(config, name) == getattr(upright, name) for name in C.RECIPE_FIELDS)
    assert config.alignment == C.AlignmentSettings(weight=2.0, scale_free=True, image_pull=0.3)
    assert (config.batch_size, config.learning_rate, config.localization_lr_scale) == (
        250, 1e-3, 3.0)


def test_python_train_py_and_make_train_write_the_same_run_dir(train):
    makefile = (helpers.ROOT / "Makefile").read_text()
    run = re.search(r"^RUN \?= (\S+)\s*$", makefile, re.M).group(1)
    assert run == train.DEFAULT_RUN_DIR == train.default_run_dir(train.parse_args([])) \
        == "runs/default"
    assert "--run-dir $(RUN)" in makefile
    # Giving the defaults by name is the same run; any other run is <preset>_<protocol>,
    # by the current names (the old names give the same directory as the new).
    given = ["--preset", "pooled", "--protocol", "predecessor", "--recipe", "upright"]
    assert train.default_run_dir(train.parse_args(given)) == "runs/default"
    for argv in (["--preset", "seed", "--protocol", "seed"],
                 ["--preset", "predecessor", "--protocol", "predecessor"]):
        assert train.default_run_dir(train.parse_args(argv)) == "runs/predecessor_predecessor"
    assert train.default_run_dir(train.parse_args(["--recipe", "cosine"])) == \
        "runs/pooled_predecessor"


def test_the_predecessor_recipe_sets_every_setting_to_the_predecessors():
    recipe = C.RECIPES["predecessor"]
    assert {name: getattr(recipe, name) for name in C.RECIPE_FIELDS} == C.PREDECESSOR_TRAINING
    config = C.make_config("predecessor", "predecessor", recipe="predecessor")
    assert (config.learning_rate, config.schedule, config.batch_size, config.epochs,
            config.resample_warps, config.alignment, config.localization_lr_scale) == (
        1e-4, "constant", 500, 20, False, None, 1.0)
    for name, recipe in C.RECIPES.items():  # no setting left to Config's defaults
        assert all(getattr(recipe, f) is not None or f == "alignment"
                   for f in C.RECIPE_FIELDS), name


@pytest.mark.parametrize("old, new, lookup", [
    ("seed", "predecessor", lambda n: C.model_config(n)),
    ("seed", "predecessor", lambda n: protocols.get_protocol(n)),
    ("default", "cosine", lambda n: C.make_config(recipe=n)),
])
def test_old_names_resolve_to_the_new(old, new, lookup):
    assert lookup(old) == lookup(new)


def test_old_names_are_read_everywhere_and_help_lists_the_new(train, capsys):
    old = C.make_config("seed", "seed", recipe="default")
    assert old == C.make_config("predecessor", "predecessor", recipe="cosine")
    assert (old.model.preset, old.protocol, old.recipe) == ("predecessor", "predecessor", "cosine")
    args = train.parse_args(["--preset", "seed", "--protocol", "seed", "--recipe", "default"])
    assert (args.preset, args.protocol, args.recipe) == ("predecessor", "predecessor", "cosine")
    record = json.loads((helpers.ROOT / "results/seed_seed_default/config.json").read_text())
    assert (record["config"]["protocol"], record["config"]["recipe"]) == ("seed", "default")
    assert C.config_from_dict(record["config"]) == dataclasses.replace(
        C.make_config("seed", "seed", {"dtype": record["config"]["model"]["dtype"]},
                      recipe="default"), **{k: record["config"][k] for k in ("seed",)})
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    out = capsys.readouterr().out
    options, aliases = out.split("old names, still accepted:")
    usage, names = options.split("\n\n")[0], options.split("--preset PRESET")[2]
    names = usage.split("[--seed")[0] + names.split("--seed SEED")[0]  # the three flags
    names = re.sub(r"\(default:\s[^)]*\)", "", names)  # their names, not the word default
    listed = set(re.findall(r"[\w.-]+", re.sub(r"-\n\s+", "-", names)))  # joined where wrapped
    assert set(C.MODEL_PRESETS) | set(C.RECIPES) | set(protocols.PROTOCOLS) <= listed
    for name in (*C.PRESET_ALIASES, *C.RECIPE_ALIASES, *protocols.ALIASES):
        assert name not in listed, name
    assert "seed = predecessor" in aliases and "default = cosine" in aliases
    assert set(C.PRESET_ALIASES.values()) <= set(C.MODEL_PRESETS)
    assert set(C.RECIPE_ALIASES.values()) <= set(C.RECIPES)
    assert set(protocols.ALIASES.values()) <= set(protocols.PROTOCOLS)


def _canonical(key: str, value):
    return {"protocol": protocols.canonical_name, "recipe": C.canonical_recipe}.get(
        key, lambda v: v)(value)


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: str(p.parent.relative_to(helpers.ROOT)))
def test_every_committed_record_reads_back_as_its_run(path):
    written = json.loads(path.read_text())["config"]
    config = C.config_from_dict(written)
    # Every value the record holds is the config's (old names as the new ones,
    # the flat alignment_* keys as Config.alignment); what it lacks, it ran
    # with the predecessor's value.
    flat = {k[len(C.ALIGNMENT_PREFIX):]: v for k, v in written.items()
            if k.startswith(C.ALIGNMENT_PREFIX)}
    assert config.alignment == (C.AlignmentSettings(**flat) if flat.get("weight") else None)
    for key, value in written.items():
        if key == "model":
            model = json.loads(json.dumps(dataclasses.asdict(config.model)))
            assert model | dict(value, preset=C.canonical_preset(value["preset"])) == model
        elif not key.startswith(C.ALIGNMENT_PREFIX):
            assert getattr(config, key) == _canonical(key, value), key
    for key, value in C.PREDECESSOR_TRAINING.items():
        if key not in written and key != "alignment":
            assert getattr(config, key) == value, key
    # Serialised again (the nested form), it is the same config.
    again = json.loads(json.dumps(C.config_to_dict(config)))
    assert C.config_from_dict(again) == config
    assert again["alignment"] == (None if config.alignment is None
                                  else dataclasses.asdict(config.alignment))


def test_alignment_settings_are_one_value_given_flat_or_nested():
    from stn.train import alignment as align

    flat = C.make_config("st-cnn-affine", "r", recipe="table1", alignment_weight=1.0,
                         alignment_zoom=1.3, alignment_image_pull=0.1)
    settings = C.AlignmentSettings(weight=1.0, zoom=1.3, image_pull=0.1)
    assert flat == C.make_config("st-cnn-affine", "r", recipe="table1", alignment=settings)
    assert flat.alignment == settings and not hasattr(flat, "alignment_weight")
    term = align.Alignment.of(settings)
    assert dataclasses.asdict(term) == dataclasses.asdict(settings)
    # A flag on top of the recipe's term replaces that field only.
    upright = C.make_config(alignment_degrees=90.0)
    assert upright.alignment == dataclasses.replace(C.UPRIGHT_ALIGNMENT, degrees=90.0)
    with pytest.raises(C.ConfigError, match="alignment None is off"):
        C.Config(alignment=C.AlignmentSettings(weight=0.0))
    with pytest.raises(ValueError, match="the alignment settings are"):
        C.make_config(alignment_bogus=1.0)
    assert isinstance(C.SETTING_FIELDS["alignment_zoom"], dataclasses.Field)
    parser = argparse.ArgumentParser()
    from stn.train import cli
    cli.add_settings(parser)
    assert parser.parse_args(["--alignment-zoom", "1.2"]).alignment_zoom == 1.2
