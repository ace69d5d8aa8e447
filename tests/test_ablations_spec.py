"""Experiment specs: the shipped ones expand as documented; each kind of mistake gets its one-line message."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ablations.expand import expand
from ablations.spec import SpecError, list_specs, load_spec

SHIPPED = ["msm_mtm", "modulation", "depth", "pos_enc", "scales", "branches", "tune", "streams"]


def test_every_shipped_spec_loads_and_expands():
    assert sorted(name for name, _ in list_specs()) == sorted(SHIPPED)
    counts = {name: len(expand(load_spec(name), "quick", seeds=1)) for name in SHIPPED}
    assert counts == {"msm_mtm": 4, "modulation": 4, "depth": 4, "pos_enc": 4, "scales": 12, "branches": 7,
                      "tune": 2, "streams": 4}


def test_msm_mtm_quick_runs_four_variants_on_seeds_until_decided():
    spec = load_spec("msm_mtm")
    plans = expand(spec, "quick")
    assert len(plans) == 20 and len({p.config_hash for p in plans}) == 20  # every seed up to max
    assert {(p.config.model.msm, p.config.model.mtm) for p in plans} == {
        ("released", True), ("released", False), ("off", True), ("off", False)}
    assert {p.seed for p in plans} == {1, 2, 3, 4, 5} and {p.config.train.epochs for p in plans} == {8}
    until = spec.budgets["quick"].until
    assert (until.min, until.max, until.margin) == (3, 5, 0.5)


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
    bad_set = _cli("msm_mtm", "--dry-run", "model.deph=2")
    assert bad_set.returncode == 2 and "did you mean model.depth?" in bad_set.stderr


@pytest.mark.slow
def test_set_values_are_checked_together_then_alone():
    together = _cli("msm_mtm", "--dry-run", "model.num_frames=4", "model.num_scales=2")
    assert together.returncode == 0, together.stderr
    alone = _cli("msm_mtm", "--dry-run", "model.num_frames=4")
    assert alone.returncode == 2
    assert "error: model.num_frames=4: model.num_frames=4 leaves the coarsest of 3 scales under 2 frames" in alone.stderr


@pytest.mark.slow
def test_set_on_a_factor_key_warns_that_the_variants_win():
    shadowed = _cli("depth", "--dry-run", "model.depth=9", "--set", "train.epochs=2")
    assert shadowed.returncode == 0
    assert shadowed.stderr.count("warning:") == 1
    assert "warning: model.depth=9 has no effect: depth sets model.depth through its factor" in shadowed.stderr


@pytest.mark.slow
def test_cli_list_and_dry_run():
    listing = _cli("--list")
    assert listing.returncode == 0 and all(name in listing.stdout for name in SHIPPED)
    dry = _cli("msm_mtm", "--dry-run", "--seeds", "3", "--gpus-per-trial", "0.25")
    assert dry.returncode == 0
    assert "12 trials;" in dry.stdout and "msm=off,mtm=false,seed=3" in dry.stdout
    assert "each trial gets 1 CPU, 0.25 GPU, device cuda, whether or not the cluster has GPUs" in dry.stdout


# --- resources per budget: a GPU share under paper where the cluster has GPUs, none under quick -------------------

def test_resources_are_chosen_per_budget_and_cluster(tmp_path):
    from ablations.resources import trial_resources
    from ablations.spec import Resources

    plain = load_spec(_spec(tmp_path, "name: x\nfactors:\n  model.mtm: [true]\n"))
    paper_gpu, paper_cpu = (trial_resources(plain, "paper", "auto", has_gpus) for has_gpus in (True, False))
    assert (paper_gpu.cpu, paper_gpu.gpu, paper_gpu.device) == (1, 0.5, "cuda")
    assert (paper_cpu.gpu, paper_cpu.device) == (0, "cpu")
    assert trial_resources(plain, "quick", "auto", True).gpu == 0
    assert trial_resources(plain, "paper", "cpu", True).gpu == 0  # trials set to the CPU reserve no GPU
    # The command line's share is asked for as given, even where the cluster has no GPUs (yet).
    assert trial_resources(plain, "quick", "auto", False, cpus=2, gpus=0.25).request() == {"cpu": 2, "gpu": 0.25}

    path = tmp_path / "own.yaml"
    path.write_text("name: x\nfactors:\n  model.mtm: [true]\n"
                    "resources: {cpus_per_trial: 2, paper: {gpus_per_trial: 0.25}}\n")
    own = load_spec(path)
    assert own.resources == {"paper": Resources(cpus=2, gpus=0.25), "quick": Resources(cpus=2, gpus=None)}
    assert str(trial_resources(own, "paper", "auto", True)) == "2 CPU, 0.25 GPU, device cuda"
    assert trial_resources(own, "paper", "auto", False).gpu == 0


@pytest.mark.parametrize("resources, message", [
    ("{paper: {gpus_per_trial: 1.5}}", r"bad.yaml:4: gpus_per_trial must be a fraction in \[0, 1\] or a whole number"),
    ("{fast: {gpus_per_trial: 1}}", r"bad.yaml:4: unknown resource 'fast'"),
    ("{quick: {gpus_per_trail: 1}}",
     r"bad.yaml:4: unknown resource of budget quick 'gpus_per_trail' \(did you mean 'gpus_per_trial'\?\)"),
    ("{cpus_per_trial: 0}", r"bad.yaml:4: cpus_per_trial must be a positive number, got 0"),
])
def test_bad_resources_get_one_line_errors(tmp_path, resources, message):
    with pytest.raises(SpecError, match=message):
        load_spec(_spec(tmp_path, f"name: x\nfactors:\n  model.mtm: [true]\nresources: {resources}\n"))


def test_dry_run_says_what_a_trial_gets_with_and_without_gpus(capsys):
    from ablations import run as ablations_run

    assert ablations_run.main(["msm_mtm", "--dry-run", "--budget", "paper"]) == 0
    assert ("each trial gets 1 CPU, 0.5 GPU, device cuda where the cluster has GPUs; 1 CPU, 0 GPU, device cpu "
            "where it has none") in capsys.readouterr().out
    assert ablations_run.main(["msm_mtm", "--dry-run"]) == 0
    assert "each trial gets 1 CPU, 0 GPU, device cpu, whether or not the cluster has GPUs" in capsys.readouterr().out


def test_dry_run_lists_the_packs_the_run_trains(capsys):
    from ablations import run as ablations_run

    # fixed seeds: each variant's seeds in packs of at most 2
    assert ablations_run.main(["msm_mtm", "--dry-run", "--seeds", "3", "--pack", "2"]) == 0
    printed = capsys.readouterr().out
    assert "trial packs (--pack 2): 8 Tune trials\n" in printed
    assert "  pack-msm=off,mtm=true,seeds=1-2: msm=off,mtm=true,seed=1, msm=off,mtm=true,seed=2\n" in printed
    assert "  msm=off,mtm=true,seed=3: msm=off,mtm=true,seed=3\n" in printed
    # seeds until decided (the quick budget's 3..5): round 1's seeds, not all five, share a pack
    assert ablations_run.main(["msm_mtm", "--dry-run", "--pack", "8"]) == 0
    printed = capsys.readouterr().out
    assert ("trial packs (--pack 8) in round 1: 4 Tune trials; each later round packs the seeds it adds alike\n"
            in printed)
    assert "  pack-msm=off,mtm=true,seeds=1-3: msm=off,mtm=true,seed=1, msm=off,mtm=true,seed=2, " \
           "msm=off,mtm=true,seed=3\n" in printed
    assert ablations_run.main(["msm_mtm", "--dry-run"]) == 0  # auto: on a CPU, no packs
    assert "trial packs (--pack auto) in round 1: none, each trial alone" in capsys.readouterr().out


# --- stream ensembles: the streams spec, and each kind of mistake in `ensembles` ------------------------------------

STREAMS_SPEC = "name: x\nfactors:\n  data.modality: [joint, bone, joint_motion]\n"


def test_streams_spec_trains_four_streams_and_records_its_ensembles(capsys):
    from ablations import run as ablations_run

    spec = load_spec("streams")
    assert spec.ensembles == {"2s": {"joint": 1.0, "bone": 1.0},
                              "4s": {"joint": 2.0, "bone": 2.0, "joint_motion": 1.0, "bone_motion": 1.0}}
    assert spec.to_dict()["ensembles"] == spec.ensembles  # experiment.json's "spec" carries them to the report
    assert spec.reference == {"data.modality": "joint"} and not spec.rules and not spec.exclude
    assert ablations_run.main(["streams", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    streams = ["joint", "bone", "joint_motion", "bone_motion"]
    assert "8 trials;" in printed
    assert all(f"modality={stream},seed={seed} " in printed for stream in streams for seed in (1, 2))


@pytest.mark.parametrize("ensembles, message", [
    ("ensembles:\n  2s: {joint: 1, bone: 1}\n",
     r"bad.yaml:4: ensembles fuse models trained on different streams: they need a data.modality factor "
     r"\(factors: model.mtm\)"),
    ("ensembles: [joint, bone]\n", r"bad.yaml:5: ensembles must map names to \{stream: weight\}"),
    ("ensembles:\n  2s: {joint: 1, bnoe: 1}\n",
     r"bad.yaml:6: ensemble 2s: 'bnoe' is not a value of the data.modality factor; did you mean bone\? "
     r"streams: joint, bone, joint_motion"),
    ("ensembles:\n  2s: {joint: 1, bone_motion: 1}\n",
     r"bad.yaml:6: ensemble 2s: 'bone_motion' is not a value of the data.modality factor"),
    ("ensembles:\n  2s:\n    joint: 1\n    bone: 0\n",
     r"bad.yaml:8: ensemble 2s: the weight of bone must be a positive number, got 0"),
    ("ensembles:\n  2s: {joint: heavy, bone: 1}\n",
     r"bad.yaml:6: ensemble 2s: the weight of joint must be a positive number, got 'heavy'"),
    ("ensembles:\n  2s: {joint: true, bone: 1}\n",
     r"bad.yaml:6: ensemble 2s: the weight of joint must be a positive number, got True"),
    ("ensembles:\n  2s: {joint: 1}\n", r"bad.yaml:6: ensemble 2s must map two or more streams to weights"),
    ("ensembles:\n  bone: {joint: 1, joint_motion: 1}\n",
     r"bad.yaml:6: ensemble 'bone' is named like a stream; name it e.g. 2s or 4s"),
    ("ensemble:\n  2s: {joint: 1, bone: 1}\n", r"bad.yaml:5: unknown field 'ensemble' \(did you mean 'ensembles'\?\)"),
])
def test_bad_ensembles_get_one_line_errors(tmp_path, ensembles, message):
    factors = "name: x\nfactors:\n  model.mtm: [true]\n" if "need a" in message else STREAMS_SPEC + "seeds: 2\n"
    with pytest.raises(SpecError, match=message) as caught:
        load_spec(_spec(tmp_path, factors + ensembles))
    assert "\n" not in str(caught.value)
