"""Settings: the trials of one experiment folder grouped by what they ran with, apart from what the experiment
compares. A table or plot uses the trials of one setting only.

A rerun of an experiment with another `--epochs` or `--set` writes its trials into the same folder; a table mixing
them would compare variants trained differently. Two trials are of one setting when their resolved configurations
(the trial record's "config") agree once these keys are left out:
- what the experiment compares: its factors, the keys its rules set per variant, the values a search tuned per
  variant (the record's "search"."sampled"), and the seed (train.seed);
- what says where a run executed rather than what it computed: the keys mmn.config leaves out of the config hash
  (train.device, train.threads, train.eval_batch_size). That list lives there, once: two configurations differing
  only there have the same hash.
Settings are numbered from the newest: 1 is the one whose trials ended (or, unfinished, started) last.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .collect import ExperimentInfo

SEED_KEY = "train.seed"


@dataclass(frozen=True)
class Setting:
    number: int  # 1 is the newest
    config: dict[str, dict[str, Any]]  # the newest trial's config, the compared keys left out
    trial_dirs: frozenset[str]
    newest: pd.Timestamp  # when its last trial ended (or started)


def _without(config: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {section: {name: value for name, value in values.items() if f"{section}.{name}" not in keys}
            for section, values in config.items()}


def settings(table: pd.DataFrame, info: ExperimentInfo) -> list[Setting]:
    """The settings of `info`'s trials in `table` (summary rows that recorded a config), newest first."""
    trials = table[(table["row"] == "summary") & (table["experiment"] == info.name) & table["config"].notna()]
    compared = {*info.factors, *info.rule_keys, SEED_KEY}
    stripped: dict[str, str] = {}  # trial folder → canonical JSON of its config without the compared keys
    configs: dict[str, dict[str, Any]] = {}
    for trial_dir, config, variant, sampled in zip(trials["trial_dir"], trials["config"], trials["variant"],
                                                   trials["search_sampled"]):
        keys = compared | set(json.loads(variant) if isinstance(variant, str) else {}) \
            | set(json.loads(sampled) if isinstance(sampled, str) else {})
        configs[trial_dir] = _without(json.loads(config), keys)
        stripped[trial_dir] = json.dumps(configs[trial_dir], sort_keys=True)
    if len(set(stripped.values())) > 1:
        # Several settings, or one run on differing machines: merge what differs only where a run executed. Imported
        # here, as it loads torch, which a folder of one setting never needs.
        from mmn.config import config_hash
        hashes = {text: config_hash(json.loads(text)) for text in set(stripped.values())}
        stripped = {trial_dir: hashes[text] for trial_dir, text in stripped.items()}
    times = pd.to_datetime(trials["ended"].fillna(trials["started"]), utc=True, errors="coerce")
    when = dict(zip(trials["trial_dir"], times))
    members: dict[str, list[str]] = {}
    for trial_dir, key in stripped.items():
        members.setdefault(key, []).append(trial_dir)
    floor = pd.Timestamp.min.tz_localize("UTC")
    newest = {key: max((when[d] for d in dirs if pd.notna(when[d])), default=floor) for key, dirs in members.items()}
    order = sorted(members, key=lambda key: newest[key], reverse=True)
    result = []
    for number, key in enumerate(order, start=1):
        dirs = members[key]
        latest = max(dirs, key=lambda d: when[d] if pd.notna(when[d]) else floor)
        result.append(Setting(number, configs[latest], frozenset(dirs), newest[key]))
    return result


def describe_settings(info: ExperimentInfo, found: list[Setting], chosen: Setting) -> str:
    """One line: the folder holds several settings, which one the report uses and how each other one differs."""
    from mmn.checkpoint import describe_difference  # loads torch; only folders of several settings get here

    others = "; ".join(f"setting {other.number} ({len(other.trial_dirs)} trials) differs in "
                       f"{describe_difference(chosen.config, other.config)}"
                       for other in found if other is not chosen)
    which = "the newest" if chosen.number == 1 else f"setting {chosen.number}"
    return (f"{info.location} holds trials of {len(found)} settings; the tables and plots of {info.name} use only "
            f"{which} ({len(chosen.trial_dirs)} trials); compared with it, {others} (choose one with --group N)")


def setting_rows(table: pd.DataFrame, info: ExperimentInfo, chosen: Setting) -> pd.Series:
    """Which rows of `table` belong to `info`'s experiment and `chosen`, and rows of its trials that recorded no
    config (an unreadable trial record: a failed trial, listed whatever the setting)."""
    mine = table["experiment"] == info.name
    unplaced = set(table.loc[mine & (table["row"] == "summary") & table["config"].isna(), "trial_dir"])
    return mine & table["trial_dir"].isin(chosen.trial_dirs | unplaced)
