"""The studies' chains of runs, as data: bench/studies/chain_data/<study>.json, one file a study, its
story in docs/studies/<study>.md.

A study is a list of links, each one run with the committed record it produced (`record`, the config
hash of results/runs/<record>.json). A link is either a root, its whole config as data (`config`; `grid`
names the product grid that holds it, where one does), or the one change it makes to its parent, which it
names (`parent`, `how`, `change`):

    {"name": "broadcast_80min", "parent": "broadcast_40min", "how": "extends",
     "change": {"time_limit_s": 4800.0}, "record": "<the 16-digit config hash of its record>"}

`change` is merged into the parent's config key by key (nested dicts too), and `how` says how the link
goes on from its parent:

    extends       the parent given longer: RunConfig.extends is the parent's hash (from its checkpoint)
    starts_from   goes on from the parent's end: RunConfig.starts_from is the parent's hash (its final state)
    variant       a new run from the start, the parent's recipe changed (neither extends nor starts_from)

A link's config depends on its ancestors only, so adding a link changes no other link's hash. `chains`
groups links under the names a sweep trains them by, in order (`python -m bench sweep
bench.studies.chains:to_the_limit_broadcast --workers 1`), with `rows_of`: the product grid whose tables
show them (none for a chain its findings page alone tabulates).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bench.harness.config import OPERATIONAL_FIELDS, RunConfig, config_hash, load_stored_config

DATA = Path(__file__).with_name("chain_data")
STUDIES = ("to_the_limit", "float64", "ode_whole_set")
HOWS = ("extends", "starts_from", "variant")


class ChainDataError(ValueError):
    """A study's chain data is inconsistent; the message names the study, the link and the field."""


@dataclass(frozen=True)
class Link:
    """One run of a study: its name, its config (as data) and the record it produced."""

    name: str
    study: str
    record: str
    config: dict = field(repr=False)
    parent: Optional[str] = None
    how: Optional[str] = None
    change: Optional[dict] = None
    grid: Optional[str] = None

    @property
    def hash(self) -> str:
        return config_hash(self.config)


def merged(base: dict, change: dict) -> dict:
    """`base` with `change` merged in key by key: a dict in both is merged, anything else replaced."""
    out = dict(base)
    for key, value in change.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def derived_config(parent: dict, how: str, change: dict) -> dict:
    """The config of a link that goes on from `parent` (a config dict) as `how` says, with `change` made."""
    config = merged(parent, change)
    parent_hash = config_hash(parent)
    if how == "extends":
        return {**config, "extends": parent_hash}
    if how == "starts_from":
        return {**config, "extends": None, "starts_from": parent_hash}
    return {**config, "extends": None, "starts_from": None}


def study_data(study: str) -> dict:
    """The raw data of one study (its JSON file)."""
    if study not in STUDIES:
        raise ChainDataError(f"no study named {study!r}; studies: {', '.join(STUDIES)}")
    return json.loads((DATA / f"{study}.json").read_text())


def _check_entry(study: str, entry: dict, known: dict[str, Any]) -> None:
    name = entry.get("name")
    where = f"study {study!r}, link {name!r}"
    if not name or name in known:
        raise ChainDataError(f"{where}: name: every link needs a name of its own")
    if "config" in entry:
        if "parent" in entry or "how" in entry or "change" in entry:
            raise ChainDataError(f"{where}: a root has its config; parent, how and change belong to other links")
    elif entry.get("how") not in HOWS:
        raise ChainDataError(f"{where}: how must be one of {', '.join(HOWS)}, got {entry.get('how')!r}")
    elif entry.get("parent") not in known:
        raise ChainDataError(f"{where}: parent {entry.get('parent')!r} is no link named before it")
    elif not isinstance(entry.get("change"), dict):
        raise ChainDataError(f"{where}: change must be the fields the link changes, as a dict")
    if not isinstance(entry.get("record"), str) or len(entry["record"]) != 16:
        raise ChainDataError(f"{where}: record must be the 16-digit config hash of the link's committed record")


def resolve(study: str, entries: list[dict]) -> dict[str, Link]:
    """The links of `entries` (a study's "links"), each config derived from its parent's."""
    out: dict[str, Link] = {}
    for entry in entries:
        _check_entry(study, entry, out)
        if "config" in entry:
            config = entry["config"]
        else:
            config = derived_config(out[entry["parent"]].config, entry["how"], entry["change"])
        out[entry["name"]] = Link(name=entry["name"], study=study, record=entry["record"], config=config,
                                  parent=entry.get("parent"), how=entry.get("how"), change=entry.get("change"),
                                  grid=entry.get("grid"))
    return out


@functools.cache
def _study_links(study: str) -> dict[str, Link]:
    return resolve(study, study_data(study)["links"])


def links(study: Optional[str] = None) -> dict[str, Link]:
    """Every link of `study` (or of every study), by name, in the order the data gives them."""
    return dict(_study_links(study)) if study else {n: lk for s in STUDIES for n, lk in _study_links(s).items()}


def link(name: str) -> Link:
    """The link named `name`, in whichever study holds it."""
    for study in STUDIES:
        if name in _study_links(study):
            return _study_links(study)[name]
    raise ChainDataError(f"no link named {name!r} in any study ({', '.join(STUDIES)})")


def _load_chains() -> dict[str, dict]:
    chains = {}
    for study in STUDIES:
        for name, spec in study_data(study)["chains"].items():
            chains[name] = {"study": study, "rows_of": spec["rows_of"], "links": tuple(spec["links"])}
    return chains


# chain name -> {"study", "rows_of", "links"}: read once, when this module is imported (the files are small)
CHAINS: dict[str, dict] = _load_chains()


def chain(name: str) -> list[Link]:
    """The links of the chain `name`, in the order a sweep trains them."""
    if name not in CHAINS:
        raise ChainDataError(f"no chain named {name!r}; chains: {', '.join(CHAINS)}")
    spec = CHAINS[name]
    return [_study_links(spec["study"])[n] for n in spec["links"]]


def rows_of(name: str) -> Optional[str]:
    """The product grid whose tables show the chain's links as rows (None: its findings page alone)."""
    return CHAINS[name]["rows_of"]


@functools.cache
def _run_configs(name: str) -> tuple[RunConfig, ...]:
    return tuple(load_stored_config(lk.config) for lk in chain(name))


def run_configs(name: str) -> list[RunConfig]:
    """The links of the chain `name` as RunConfigs, to sweep or tabulate (a link whose solver options were
    retired since loads as its record does, naming the run it was)."""
    return list(_run_configs(name))


def findings_table(study: str, results: str | Path = "results") -> str:
    """The Markdown table of a study's links, from the data and their committed records: what its findings
    page shows (tests/test_chains.py checks that the page holds it as written here)."""
    runs = Path(results) / "runs"
    rows = ["| link | parent | how | change | eval MSE | training in all | record |", "|---|---|---|---|---|---|---|"]
    for lk in links(study).values():
        record = json.loads((runs / f"{lk.record}.json").read_text())
        change = ", ".join(f"`{k}` {_value(v)}" for k, v in _flat(lk.change or {}) if k not in OPERATIONAL_FIELDS)
        parent = f"`{lk.parent}`" if lk.parent else f"grid `{lk.grid}`" if lk.grid else "—"
        rows.append(f"| `{lk.name}` | {parent} | {lk.how or 'root'} | {change or '—'} | {record['eval_mse']:.2e} | "
                    f"{record['train_time_s'] / 60:.0f} min | `{lk.record}` |")
    return "\n".join(rows)


def _flat(change: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in change.items():
        out += _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]
    return out


def _value(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() and abs(v) >= 1 else json.dumps(v)


def __getattr__(name: str):
    # `python -m bench sweep bench.studies.chains:NAME` trains the chain NAME's links, in order
    if name in CHAINS:
        return functools.partial(run_configs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
