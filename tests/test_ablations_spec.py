"""Experiment specs: the shipped ones expand as documented; each kind of mistake gets its one-line message."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ablations.expand import expand
from ablations.spec import SpecError, list_specs, load_spec

SHIPPED = ["msm_mtm", "modulation", "depth", "pos_enc", "scales", "branches", "tune"]


def test_every_shipped_spec_loads_and_expands():
    assert sorted(name for name, _ in list_specs()) == sorted(SHIPPED)
    counts = {name: len(expand(load_spec(name), "quick", seeds=1)) for name in SHIPPED}
    assert counts == {"msm_mtm": 4, "modulation": 4, "depth": 4, "pos_enc": 4, "scales": 12, "branches": 7,
                      "tune": 2}


def test_msm_mtm_quick_runs_four_variants_on_two_seeds():
    plans = expand(load_spec("msm_mtm"), "quick")
    assert len(plans) == 8 and len({p.config_hash for p in plans}) == 8
    assert {(p.config.model.msm, p.config.model.mtm) for p in plans} == {
        ("released", True), ("released", False), ("off", True), ("off", False)}
    assert {p.seed for p in plans} == {1, 2}


def test_rules_switch_dependent_options_and_exclude_drops_combinations():
    plans = expand(load_spec("branches"), "quick")
    for plan in plans:
        model = plan.config.model
        assert model.skeleton_branch or model.msm == "off"
        assert model.temporal_branch or not model.mtm
    assert not any(not (p.config.model.skeleton_branch or p.config.model.temporal_branch
                        or p.config.model.motion_branch) for p in plans)


def test_command_line_overrides_beat_the_budget_but_not_the_variant():
    plans = expand(load_spec("depth"), "quick", {"train.epochs": 2, "model.depth": 9})
    assert {p.config.train.epochs for p in plans} == {2}
    assert sorted({p.config.model.depth for p in plans}) == [1, 2, 3, 4]


def _spec(tmp_path, body: str):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize("body, message", [
    ("name: x\nfactors:\n  model.msm: [released, 'off']\nmetrc: val_top1\n",
     r"bad.yaml:4: unknown field 'metrc' \(did you mean 'metric'\?\)"),
    ("name: x\nfactors:\n  model.msn: [released]\n",
     r"bad.yaml:3: factors: unknown config key 'model.msn' \(did you mean model.msm\?\)"),
    ("name: x\nfactors:\n  model.msm: [released, sideways]\n",
     r"bad.yaml:3: factor model.msm: model.msm='sideways' is not one of released, graph, off"),
    ("name: x\nfactors:\n  model.msm: [released\n",
     r"bad.yaml:4: YAML syntax error"),
    ("name: x\nfactors:\n  model.depth: [1, 2]\nbase:\n  train.epochs: many\n",
     r"bad.yaml:5: base: train.epochs expects an integer, got 'many'"),
    ("name: x\nfactors:\n  model.skeleton_branch: [true, false]\n",
     r"variant skeleton_branch=false \(add a rule or an exclude entry\): model.msm modulates the skeleton branch"),
    ("name: x\nfactors:\n  model.mtm: [true, false]\nreference: {model.mtm: maybe}\n",
     r"bad.yaml:4: reference: model.mtm='maybe' is not one of its values \[True, False\]"),
    ("name: x\nfactors:\n  model.mtm: [true, false]\nmetric: accuracy\n",
     r"bad.yaml:4: metric 'accuracy' is not one of val_top1"),
    ("name: x\nfactors:\n  model.mtm: [true]\nbudgets:\n  fast: {}\n",
     r"bad.yaml:5: unknown budget 'fast'; budgets are paper, quick"),
    ("name: x\nfactors:\n  model.mtm: [true]\nsearch: {space: nowhere}\n",
     r"bad.yaml:4: search space: .*nowhere"),
    ("name: x\nfactors:\n  model.mtm: [true]\nresources: {gpus_per_trial: 1.5}\n",
     r"bad.yaml:4: gpus_per_trial must be a fraction in \[0, 1\] or a whole number, got 1.5"),
    ("name: x\nfactors:\n  model.mtm: [true]\nseeds: 2\nseeds: 3\n",
     r"bad.yaml:5: duplicate key 'seeds' in the file \(first on line 4\)"),
    ("name: x\nbase:\n  train.learning_rate: 0.1\nfactors:\n  model.mtm: [true]\n",
     r"bad.yaml:3: base: unknown config key 'train.learning_rate' \(did you mean train.lr\?\)"),
    ("name: x\nbase:\n  model.num_frames: 4\nfactors:\n  model.depth: [1, 2]\n",
     r"variant depth=1 \(add a rule or an exclude entry\): model.num_frames=4 leaves the coarsest of 3 scales"),
])
def test_bad_specs_get_one_line_errors(tmp_path, body, message):
    with pytest.raises(SpecError, match=message) as caught:
        expand(load_spec(_spec(tmp_path, body)), "quick")
    assert "\n" not in str(caught.value)


def test_options_are_checked_alone_then_together_once(tmp_path):
    """Each base value and factor value is checked on its own (type, range); conditions between options are checked
    once per variant on its whole configuration, so options that only work together are accepted together."""
    plans = expand(load_spec(_spec(tmp_path, """\
        name: x
        base: {model.num_frames: 4, model.num_scales: 2}
        factors:
          model.skeleton_branch: [true, false]
          model.msm: [released, "off"]
        exclude:
          - {model.skeleton_branch: false, model.msm: released}
        """)), "quick")
    assert {(p.config.model.num_frames, p.config.model.num_scales) for p in plans} == {(4, 2)}
    assert len({p.variant_key for p in plans}) == 3


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablations.run", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_cli_usage_errors_exit_2_with_one_line():
    unknown = _cli("msm_mtmm", "--dry-run")
    assert unknown.returncode == 2
    assert "unknown experiment 'msm_mtmm': did you mean msm_mtm?" in unknown.stderr
    bad_value = _cli("msm_mtm", "--gpus-per-trial", "1.5")
    assert bad_value.returncode == 2 and "fraction in [0, 1]" in bad_value.stderr
    bad_set = _cli("msm_mtm", "--dry-run", "--set", "model.deph=2")
    assert bad_set.returncode == 2 and "did you mean model.depth?" in bad_set.stderr


@pytest.mark.slow
def test_set_values_are_checked_together_then_alone():
    together = _cli("msm_mtm", "--dry-run", "--set", "model.num_frames=4", "--set", "model.num_scales=2")
    assert together.returncode == 0, together.stderr
    alone = _cli("msm_mtm", "--dry-run", "--set", "model.num_frames=4")
    assert alone.returncode == 2
    assert "--set model.num_frames=4: model.num_frames=4 leaves the coarsest of 3 scales under 2 frames" in alone.stderr


@pytest.mark.slow
def test_set_on_a_factor_key_warns_that_the_variants_win():
    shadowed = _cli("depth", "--dry-run", "--set", "model.depth=9", "--set", "train.epochs=2")
    assert shadowed.returncode == 0
    assert shadowed.stderr.count("warning:") == 1
    assert "warning: --set model.depth=9 has no effect: depth sets model.depth through its factor" in shadowed.stderr


@pytest.mark.slow
def test_cli_list_and_dry_run():
    listing = _cli("--list")
    assert listing.returncode == 0 and all(name in listing.stdout for name in SHIPPED)
    dry = _cli("msm_mtm", "--dry-run", "--seeds", "3", "--gpus-per-trial", "0.25")
    assert dry.returncode == 0
    assert "12 trials; each 1 CPU, 0.25 GPU" in dry.stdout and "msm=off,mtm=false,seed=3" in dry.stdout
