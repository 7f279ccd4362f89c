"""bench.studies.lm_choices: its variants are the configs they say, and --gd-step names what it needs."""
from __future__ import annotations

import pytest

from bench import grids
from bench.studies import lm_choices


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


def test_an_early_gd_step_variant_switches_at_its_adam_steps(tmp_path):
    base = grids.gd_step_warm_started(grids.CI)
    for name, overrides in lm_choices.GD_EARLY_VARIANTS.items():
        cfg = lm_choices.gd_early_trainer(overrides, tmp_path / name, adam_steps=24_000).cfg
        assert cfg.polish_after == 24_000 and cfg.time_limit_s is None
        assert cfg.polish == base.polish.model_copy(update=overrides)
        assert cfg.model_copy(update={"polish": base.polish, "polish_after": base.polish_after,
                                      "time_limit_s": base.time_limit_s}) == base


def test_two_writers_of_the_summary_keep_both_variants(tmp_path):
    import json
    import multiprocessing

    path = tmp_path / "summary.json"
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=lm_choices.add_to_summary, args=(path, f"v{i}", {"final": i})) for i in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert all(w.exitcode == 0 for w in writers)
    assert json.loads(path.read_text()) == {f"v{i}": {"final": i} for i in range(4)}


def test_gd_step_can_start_from_the_slice_grid_s_warm_run(tmp_path, monkeypatch):
    [warm] = [c for c in grids.to_the_limit_slice("ci") if c.polish is not None]
    cfg = lm_choices.gd_step_trainer({"lr": 0.5}, tmp_path, run=warm.hash).cfg
    assert cfg.polish == warm.polish.model_copy(update={"lr": 0.5}) and cfg.polish.gradient == "slice"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=f"checkpoint of run {warm.hash}.*to_the_limit_slice_ci"):
        lm_choices.gd_step_start(warm.hash)
    with pytest.raises(SystemExit, match="--gd-step-run must be one of"):
        lm_choices.gd_step_run("0123456789abcdef")


def test_a_late_variant_changes_only_the_second_phases_lm():
    base = lm_choices.late_config({})
    for name, overrides in lm_choices.LATE_VARIANTS.items():
        cfg = lm_choices.late_config(overrides)
        assert cfg.model_copy(update={"polish": base.polish}) == base
        assert (cfg.polish == base.polish.model_copy(update=overrides)) and ((cfg.hash == base.hash) == (not overrides))


def test_without_a_comparison_it_says_which_there_are(capsys):
    with pytest.raises(SystemExit):
        lm_choices.main([])
    assert "--late, --gd-step or --gd-step-early" in capsys.readouterr().err
