import pytest

from stnkit.reproduce.cells import budget_recipe
from stnkit.training.recipes import get_recipe


def test_budget_recipe_applies_the_recipe_fields_and_drops_the_others():
    r = budget_recipe({"recipe": "cpu", "steps": 7, "batch_size": 16, "loc_lr_scale": 1.0, "train_subset": 5,
                       "st_steps": 9})
    base = get_recipe("cpu")
    assert (r["steps"], r["batch_size"], r["loc_lr_scale"]) == (7, 16, 1.0)
    assert (r["lr"], r["optimizer"], r["name"]) == (base.lr, base.optimizer, "cpu")
    assert "train_subset" not in r
    assert "st_steps" not in r


def test_budget_recipe_rejects_an_unknown_recipe():
    with pytest.raises(ValueError, match="unknown recipe"):
        budget_recipe({"recipe": "fast"})
