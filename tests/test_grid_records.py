"""Every run of every product grid at ci has a committed record in results/runs/, or is listed in one place
(bench.grids.registry.NOT_YET_RUN) as not yet run; and that list names nothing that has a record."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.grids import registry

RUNS = Path(__file__).resolve().parent.parent / "results" / "runs"


# tiny forwards (validating a config runs its model once) are fastest on one thread
pytestmark = pytest.mark.usefixtures("one_thread_module")


def committed() -> set[str]:
    return {p.stem for p in RUNS.glob("*.json")}


def test_every_ci_config_of_every_product_grid_is_recorded_or_listed_as_not_yet_run():
    records = committed()
    missing = {c.hash: f"{name}: {c.label()}" for name, fn in registry.GRIDS.items() for c in fn("ci")
               if c.hash not in records and c.hash not in registry.NOT_YET_RUN}
    assert not missing, ("product-grid runs at ci with no committed record: train them, or list them in "
                         f"bench.grids.registry.NOT_YET_RUN: {missing}")


def test_the_not_yet_run_list_holds_only_unrecorded_grid_runs():
    ci = {c.hash for fn in registry.GRIDS.values() for c in fn("ci")}
    for cfg_hash, why in registry.NOT_YET_RUN.items():
        assert re.fullmatch(r"[0-9a-f]{16}", cfg_hash) and why, cfg_hash
        assert cfg_hash not in committed(), f"{cfg_hash} has a committed record: take it off NOT_YET_RUN"
        assert cfg_hash in ci, f"{cfg_hash} is no product grid's run at ci: take it off NOT_YET_RUN"


def test_the_check_sees_a_grid_run_without_a_record(monkeypatch):
    grid = registry.GRIDS["gd_step"]
    new = grid("ci")[0].model_copy(update={"seed": 12345})
    monkeypatch.setitem(registry.GRIDS, "gd_step", lambda budget: grid(budget) + [new])
    with pytest.raises(AssertionError, match=f"{new.hash}.*gd_step"):
        test_every_ci_config_of_every_product_grid_is_recorded_or_listed_as_not_yet_run()
    monkeypatch.setattr(registry, "NOT_YET_RUN", {new.hash: "a new seed, not trained yet"})
    test_every_ci_config_of_every_product_grid_is_recorded_or_listed_as_not_yet_run()
    test_the_not_yet_run_list_holds_only_unrecorded_grid_runs()
    recorded = grid("ci")[0].hash
    monkeypatch.setattr(registry, "NOT_YET_RUN", {recorded: "stale"})
    with pytest.raises(AssertionError, match="has a committed record"):
        test_the_not_yet_run_list_holds_only_unrecorded_grid_runs()
