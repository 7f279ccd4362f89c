"""Where a run starts: its own checkpoint, the checkpoint of the run it extends (RunConfig.extends),
or the final state of the run it starts from (RunConfig.starts_from); unreadable files set aside."""
from __future__ import annotations

import json
import math
import sys
from typing import Optional

from bench.harness.config import RunConfig, RunConfigError
from bench.harness.records import BadFileError, NewerRecordError, load_checkpoint, set_aside


def readable(load, cfg: RunConfig, results_dir):
    """load(cfg, results_dir), or None after setting an unreadable file aside."""
    try:
        return load(cfg, results_dir)
    except NewerRecordError:
        raise  # a sound file this code is too old for: never set aside (nor retrained over)
    except BadFileError as err:
        set_aside(err.path, str(err))
        return None


def extended_start(cfg: RunConfig, results_dir) -> Optional[dict]:
    """The checkpoint of the run `cfg.extends` names, to go on from (None: train from the start).
    Raises RunConfigError if that run is not cfg with a shorter time limit, or if it diverged."""
    state = readable(load_checkpoint, cfg.extends, results_dir)
    if state is None:
        print(f"run {cfg.hash}: no checkpoint of the run it extends ({cfg.extends}) under {results_dir}; "
              "training from the start", file=sys.stderr)
        return None
    base_limit, our_limit = json.loads(state["config"]).get("time_limit_s"), cfg.time_limit_s
    if config_differences(state, cfg, free=("time_limit_s",)) or base_limit is None or base_limit >= our_limit:
        raise RunConfigError(f"extends: run {cfg.extends} is not this run ({cfg.hash}) with a shorter time_limit_s; "
                             "name the hash of that run, or leave extends unset")
    if state.get("status") == "diverged":
        raise RunConfigError(f"extends: run {cfg.extends} diverged: there is nothing to go on from; leave extends "
                             "unset to train from the start")
    return state


def config_differences(state: dict, cfg: RunConfig, free: tuple[str, ...]) -> list[str]:
    """The hashed fields, other than `free`, in which the run whose checkpoint is `state` differs from cfg."""
    base, ours = json.loads(state["config"]), json.loads(cfg.canonical_json())
    return sorted(k for k in set(base) | set(ours) if k not in free and base.get(k) != ours.get(k))


# what a run that starts from another one (RunConfig.starts_from) may change of that run's config: its
# polish and length, and its dtype (a float32 run's end polished in float64: the weights widen exactly,
# every problem is drawn in float64 and rounded to the run's dtype, so the problems stay the same)
BRANCH_FIELDS = ("polish", "steps", "time_limit_s", "dtype", "starts_from")


def branch_start(cfg: RunConfig, results_dir) -> dict:
    """The final state of the run `cfg.starts_from` names, for cfg to go on from with its own polish.
    Raises RunConfigError if none is under results_dir, if that run did not end ok, if it is not cfg
    with another polish, steps, time limit or dtype (BRANCH_FIELDS), or if cfg would go no further than it."""
    parent = cfg.starts_from
    state = readable(load_checkpoint, parent, results_dir)
    if state is None:
        raise RunConfigError(f"starts_from: run {parent} has no checkpoint or kept final state under {results_dir}; "
                             "train it first (keep_final_state keeps its final state), or leave starts_from unset")
    if not state.get("result") or state.get("status") != "ok":
        raise RunConfigError(f"starts_from: run {parent} is {state.get('status') or 'not finished'}; a run goes on "
                             "only from where another one ended ok")
    differ = config_differences(state, cfg, free=BRANCH_FIELDS)
    if differ:
        raise RunConfigError(f"starts_from: run {parent} differs from this run ({cfg.hash}) in {', '.join(differ)}; "
                             f"only {', '.join(BRANCH_FIELDS[:4])} may change")
    # its steps and seconds count the parent's: neither may be fewer, and one must be more (None: no limit)
    base = json.loads(state["config"])
    ours, theirs = (cfg.steps, cfg.time_limit_s), (base["steps"], base.get("time_limit_s"))
    our_steps, our_seconds = (math.inf if v is None else v for v in ours)
    base_steps, base_seconds = (math.inf if v is None else v for v in theirs)
    if our_steps < base_steps or our_seconds < base_seconds or (our_steps, our_seconds) == (base_steps, base_seconds):
        raise RunConfigError(f"starts_from: this run's steps and time_limit_s {ours} would take it no further than "
                             f"run {parent} went {theirs}; the counts include that run's")
    if base["dtype"] != cfg.dtype and state.get("switched_at") is not None and "damping" in state["optimizer"]:
        # a Levenberg-Marquardt damping answers its own arithmetic: where float32 can lower the loss no more,
        # every step is refused and it climbs without bound; in another dtype the trust region starts again
        # from the config's damping
        state = {**state, "optimizer": {**state["optimizer"], "damping": cfg.polish.damping}}
    return state
