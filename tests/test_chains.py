"""bench.studies.chains: every link of every study is data that names its parent, hashes to the committed record
it produced, and keeps its hash when links are added; each study's findings page holds its table."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bench import grids
from bench.harness.config import OPERATIONAL_FIELDS, config_hash
from bench.harness.sweep import resolve_grid
from bench.studies import chains

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "results" / "runs"


# tiny forwards (validating a config runs its model once) are fastest on one thread
pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_every_link_hashes_to_its_committed_record():
    links = chains.links()
    assert len(links) == 44
    for name, link in links.items():
        assert link.hash == link.record, name
        stored = json.loads((RUNS / f"{link.record}.json").read_text())
        assert stored["config_hash"] == link.record and config_hash(stored["config"]) == link.record, name


def test_a_link_is_its_parents_config_with_one_change():
    for name, link in chains.links().items():
        if link.parent is None:
            assert link.how is None and link.change is None, name
            continue
        parent = chains.link(link.parent)
        assert link.study == parent.study, name
        relation = {"extends": (parent.hash, parent.config["starts_from"]), "starts_from": (None, parent.hash),
                    "variant": (None, None)}[link.how]
        assert (link.config["extends"], link.config["starts_from"]) == relation, name
        differs = {k for k in link.config if link.config[k] != parent.config.get(k)} - {"extends", "starts_from"}
        assert differs == set(link.change), name
        if link.how == "extends":  # the same run given longer: only the time (and how it is run) changes
            assert set(link.change) - set(OPERATIONAL_FIELDS) == {"time_limit_s"}, name
            assert link.config["time_limit_s"] > parent.config["time_limit_s"], name


def test_adding_a_link_changes_no_other_link_s_hash():
    for study in chains.STUDIES:
        entries = chains.study_data(study)["links"]
        before = {name: link.hash for name, link in chains.resolve(study, entries).items()}
        root = entries[0]["name"]
        new = [{"name": "longer", "parent": entries[-1]["name"], "how": "extends", "change": {"time_limit_s": 10 ** 6},
                "record": "0" * 16},
               {"name": "branch", "parent": root, "how": "starts_from",
                "change": {"time_limit_s": 10 ** 6, "checkpoint_every": 7}, "record": "1" * 16}]
        # added at the end, and in the middle of the list: links are found by name, not by position
        for added in (entries + new, entries[:1] + new[1:] + entries[1:] + new[:1]):
            after = chains.resolve(study, copy.deepcopy(added))
            assert {name: after[name].hash for name in before} == before, study
            assert after["longer"].config["extends"] == before[entries[-1]["name"]]


def test_bad_chain_data_is_named():
    root = chains.study_data("ode_whole_set")["links"][0]
    for entry, message in (
            ({"name": "x", "parent": "nope", "how": "extends", "change": {}, "record": "0" * 16}, "parent 'nope'"),
            ({"name": "x", "parent": root["name"], "how": "grows", "change": {}, "record": "0" * 16}, "how must be"),
            ({"name": root["name"], "parent": root["name"], "how": "extends", "change": {}, "record": "0" * 16},
             "a name of its own"),
            ({"name": "x", "parent": root["name"], "how": "extends", "change": {}, "record": "abc"}, "16-digit")):
        with pytest.raises(chains.ChainDataError, match=f"study 'ode_whole_set', link .*{message}"):
            chains.resolve("ode_whole_set", [root, entry])
    with pytest.raises(chains.ChainDataError, match="no link named 'nope'"):
        chains.link("nope")


def test_each_chain_trains_its_links_in_order_and_names_where_its_rows_are():
    chained = set()
    for name, spec in chains.CHAINS.items():
        links = chains.chain(name)
        assert [lk.name for lk in links] == list(spec["links"]) and links, name
        for k, link in enumerate(links):  # a link that goes on from another of the chain comes after it
            if link.parent in spec["links"]:
                assert spec["links"].index(link.parent) < k, (name, link.name)
        assert spec["rows_of"] in (None, *grids.GRIDS), name
        assert [c.hash for c in resolve_grid(f"bench.studies.chains:{name}")] == [lk.record for lk in links]
        chained |= set(spec["links"])
    # every link is in a chain, or is where one starts from (a product grid's run, or an earlier run of the study)
    parents = {lk.parent for lk in chains.links().values()}
    for name, link in chains.links().items():
        assert name in chained or name in parents, name
        if link.grid is not None:
            assert link.hash in {c.hash for c in grids.GRIDS[link.grid]("ci")}, name


def test_the_never_run_float64_link_is_gone():
    # the float64 chain's 150-minute link, from its 130-minute one's end: never run, so not in the data
    never_run = "d37a0a3be0ac80b4"
    assert not (RUNS / f"{never_run}.json").exists()
    assert never_run not in {lk.record for lk in chains.links().values()}
    last = chains.chain("to_the_limit_float64")[-1]
    assert last.name == "float64_130min" and {lk.parent for lk in chains.links("float64").values()} >= {last.name}


def test_grid_names_of_the_chains_still_resolve():
    assert [c.hash for c in grids.to_the_limit_broadcast("ci")] == [lk.record for lk in chains.chain("to_the_limit_broadcast")]
    assert grids.GD_EXTENDED_SECONDS["ci"] == chains.link("warm_started_121min").config["time_limit_s"] == 7260
    assert grids.gd_step_warm_started(grids.CI, grids.GD_EXTENDED_SECONDS["ci"]).hash == "185451d5689189a2"
    assert [c.hash for c in grids.to_the_limit_extended_ci()] == ["185451d5689189a2"]


@pytest.mark.parametrize("study", chains.STUDIES)
def test_each_findings_page_holds_its_study_s_table(study):
    page = ROOT / chains.study_data(study)["page"]
    text = page.read_text()
    assert chains.findings_table(study, ROOT / "results") in text, f"{page}: regenerate its table with chains.findings_table"
    for part in ("**The question.**", "**The answer.**", "## The runs", "## What stopped it"):
        assert part in text, (page, part)
