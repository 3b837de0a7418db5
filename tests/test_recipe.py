"""The recipe: one check of a whole train config, a round trip through its dict, experiments."""

from __future__ import annotations

import pytest

from behavior.cli import override_error
from behavior.errors import ConfigError
from behavior.recipe import Recipe, compose_recipe


def test_a_recipe_round_trips_through_its_dict():
    recipe = compose_recipe(["model.widths=[8,16]", "roi=face", "model.input=rgb+flow"])
    assert Recipe.from_config(recipe.to_dict()) == recipe
    assert recipe.flow_channels == 2 and compose_recipe().flow_channels is None


def test_unknown_top_level_keys_are_named():
    values = compose_recipe().to_dict()
    with pytest.raises(ConfigError, match="^foo is not a known key; allowed keys: data, decode"):
        Recipe.from_config({**values, "foo": 1})
    del values["flow"]
    with pytest.raises(ConfigError, match="^flow is missing"):
        Recipe.from_config(values)


@pytest.mark.parametrize(("name", "manifest", "root", "resize", "model_input", "epochs"), [
    ("surveillance_fight", "../shared/datasets/surveillance_fight/groups.csv", None, "short_side", "rgb", 10),
    ("basketball", None, "../shared/datasets/basketball", "letterbox", "rgb+flow", 30),
])
def test_an_experiment_is_a_whole_recipe(name, manifest, root, resize, model_input, epochs):
    recipe = compose_recipe([f"experiment={name}"])
    assert (recipe.data.manifest, recipe.data.root, recipe.transform.resize) == (manifest, root, resize)
    assert recipe.model.input == model_input and recipe.trainer.epochs == epochs
    assert recipe.transform.crop_size == 80 and recipe.trainer.report_on == "last"
    # Command-line values still win over the experiment's.
    assert compose_recipe([f"experiment={name}", "trainer.epochs=3"]).trainer.epochs == 3


def test_an_unknown_experiment_is_one_line():
    assert override_error("train", ["experiment=nope"]) == (
        "experiment=nope: no such option in conf/experiment/; available: basketball, surveillance_fight")
