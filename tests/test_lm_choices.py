"""bench.lm_choices: its variants are the configs they say, and --gd-step names what it needs."""
from __future__ import annotations

import pytest

from bench import grids, lm_choices


def test_a_gd_step_variant_changes_only_its_lm_phase(tmp_path):
    base = grids.gd_step_warm_started(grids.CI, grids.GD_EXTENDED_SECONDS["ci"])
    for name, overrides in lm_choices.GD_STEP_VARIANTS.items():
        cfg = lm_choices.gd_step_trainer(overrides, tmp_path / name).cfg
        assert cfg.polish == base.polish.model_copy(update=overrides)
        assert cfg.model_copy(update={"polish": base.polish, "extends": base.extends}) == base
        assert (cfg.hash == base.hash) == (not overrides)


def test_the_gd_step_comparison_without_its_checkpoint_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty results/
    run = grids.gd_step_warm_started(grids.CI, grids.GD_EXTENDED_SECONDS["ci"])
    with pytest.raises(SystemExit, match=f"checkpoint of run {run.hash}.*to_the_limit_extended_ci"):
        lm_choices.gd_step_start()
