"""Seeds until decided: the spec and command-line syntax, the rounds against hand-made results (which seeds each
variant gets, and a rerun that resumes mid-way), and a real run on Ray with the tiny settings of the run tests."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ablations import run as ablations_run
from analysis.report import build_report
from ablations.expand import expand
from ablations.rounds import round_decisions, run_rounds, seeds_until_decided
from ablations.runner import RunOptions, run_experiment, scan_results
from ablations.spec import SeedsUntilDecided, SpecError, load_spec
from mmn.folders import RESULT

TINY_SET = {"data.synthetic_clips_per_class": 4, "model.num_frames": 16, "train.batch_size": 16}


def _spec(tmp_path: Path, seeds: str = "{min: 3, max: 6, until: decided, margin: 0.5}") -> Path:
    path = tmp_path / "rounds.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: rounds
        factors:
          model.msm: {{values: [released, "off", graph], label: MSM}}
        reference: {{model.msm: released}}
        seeds: {seeds}
        metric: val_top1
        """))
    return path


def test_spec_reads_seeds_until_decided(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path))
    assert spec.until == SeedsUntilDecided(3, 6, 0.5) and spec.seeds == (1, 2, 3, 4, 5, 6)
    assert str(spec.until) == "seeds 3..6 until decided (margin 0.5)"
    assert spec.to_dict()["until"] == {"min": 3, "max": 6, "until": "decided", "margin": 0.5}
    assert load_spec(_spec(tmp_path, "{min: 3, max: 4, until: decided}")).until.margin == 0.5  # the default
    for seeds, problem in [("{min: 3, max: 6}", "until: decided"), ("{min: 2, max: 6, until: decided}", "3 <= min"),
                           ("{min: 5, max: 4, until: decided}", "min <= max"),
                           ("{min: 3, max: 6, until: decided, margin: 0}", "positive number of points"),
                           ("{min: 3, max: 6, until: decided, margn: 1}", "did you mean 'margin'")]:
        with pytest.raises(SpecError, match=problem) as error:
            load_spec(_spec(tmp_path, seeds))
        assert ":5: " in str(error.value)  # the line of `seeds:`


def test_command_line_range_and_its_precedence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = load_spec(_spec(tmp_path, "{min: 3, max: 6, until: decided, margin: 1.5}"))
    assert seeds_until_decided(spec, RunOptions()) == SeedsUntilDecided(3, 6, 1.5)
    assert seeds_until_decided(spec, RunOptions(seeds=[1, 2, 3])) is None  # fixed seeds on the command line
    # --seeds 3..4 keeps the spec's margin
    ranged = RunOptions(seeds=[1, 2, 3, 4], until=SeedsUntilDecided(3, 4))
    assert seeds_until_decided(spec, ranged) == SeedsUntilDecided(3, 4, 1.5)
    assert ablations_run.main([str(spec.path), "--seeds", "3..4", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "budget quick; 12 trials;" in out
    assert "seeds 3..4 until decided (margin 1.5): 9 trials in the first round" in out
    with pytest.raises(SystemExit):
        ablations_run.main([str(spec.path), "--seeds", "1..4", "--dry-run"])
    assert "a decision needs 3 seeds" in capsys.readouterr().err


# Hand-made results: val_top1 by variant and seed. "off" loses 3 points on every seed but seed 1 (-2.5): differences
# -2.5, -3, -3, mean -2.833, std 0.2887, t = -17, p = 1 - 17 / sqrt(291) = 0.0034, 0.0069 after Holm with graph's:
# decided worse after 3 seeds. "graph" differs from the reference by +0.3, -0.3, +0.6, -0.6, 0, 0 on seeds 1..6
# (p > 0.5 throughout). Its 90% interval after 3 seeds, 0.2 -/+ 2.920 * 0.458 / sqrt 3 = [-0.57, 0.97], is not inside
# -/+0.5; after 4, 0 -/+ 2.353 * 0.548 / 2 = -/+0.64, neither; after 5, 0 -/+ 2.132 * 0.474 / sqrt 5 = -/+0.45, it
# is: equivalent at 5 seeds.
REFERENCE = {seed: 60.0 + seed for seed in range(1, 7)}
VALUES = {
    "msm=released": REFERENCE,
    "msm=off": {seed: REFERENCE[seed] - (2.5 if seed == 1 else 3.0) for seed in range(1, 7)},
    "msm=graph": {seed: REFERENCE[seed] + offset for seed, offset in zip(range(1, 7), (0.3, -0.3, 0.6, -0.6, 0, 0))},
}


class _FakeRuns:
    """Stands in for the runner: `run` "trains" a batch by recording its hand-made result."""

    def __init__(self, plans, finished=()) -> None:
        self.records = {plan.config_hash: self._record(plan) for plan in plans if (plan.variant_key, plan.seed)
                        in set(finished)}
        self.batches: list[list[tuple[str, int]]] = []

    @staticmethod
    def _record(plan) -> dict:
        return {"status": "finished", "best": {"val_top1": VALUES[plan.variant_key][plan.seed]}}

    def run(self, batch) -> None:
        self.batches.append(sorted((plan.variant_key, plan.seed) for plan in batch))
        self.records.update({plan.config_hash: self._record(plan) for plan in batch})

    def results(self) -> dict:
        return dict(self.records)


def _seeds(planned) -> dict[str, list[int]]:
    seeds: dict[str, list[int]] = {}
    for plan in planned:
        seeds.setdefault(plan.variant_key, []).append(plan.seed)
    return seeds


def test_rounds_add_seeds_only_where_undecided(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path))
    plans = expand(spec, "quick", {"train.epochs": 1})
    runs = _FakeRuns(plans)
    planned = run_rounds(plans, spec.until, spec, plans, runs.run, runs.results)
    # Round 1: seeds 1-3 of all; off is decided (worse), graph is not: round 2 adds seed 4 to graph and the
    # reference, round 3 seed 5, after which graph is equivalent.
    assert _seeds(planned) == {"msm=released": [1, 2, 3, 4, 5], "msm=off": [1, 2, 3], "msm=graph": [1, 2, 3, 4, 5]}
    assert runs.batches == [[(key, seed) for key in sorted(VALUES) for seed in (1, 2, 3)],
                            [("msm=graph", 4), ("msm=released", 4)], [("msm=graph", 5), ("msm=released", 5)]]
    values = {plan.config_hash: runs.records[plan.config_hash]["best"]["val_top1"] for plan in planned}
    assert round_decisions(planned, values, "msm=released", 0.5, True) == {"msm=off": "worse",
                                                                          "msm=graph": "equivalent"}


def test_rounds_stop_at_max_and_resume_mid_way(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, "{min: 3, max: 4, until: decided}"))
    plans = expand(spec, "quick", {"train.epochs": 1})
    # An interrupted run: round 1 finished, and graph's seed 4 (the reference's not yet).
    done = [(key, seed) for key in VALUES for seed in (1, 2, 3)] + [("msm=graph", 4)]
    runs = _FakeRuns(plans, done)
    unfinished = [plan for plan in plans if plan.config_hash not in runs.records]
    planned = run_rounds(plans, spec.until, spec, unfinished, runs.run, runs.results)
    assert runs.batches == [[("msm=released", 4)]]  # only what was left of round 2
    assert _seeds(planned)["msm=graph"] == [1, 2, 3, 4]  # undecided, and at max
    # A rerun with everything finished runs nothing and plans the same trials.
    again = run_rounds(plans, spec.until, spec, [], runs.run, runs.results)
    assert again == planned and len(runs.batches) == 1


@pytest.mark.ray
@pytest.mark.slow
def test_a_real_run_decides_in_rounds_and_a_rerun_repeats_nothing(ray_session, tmp_path: Path) -> None:
    path = tmp_path / "mini.yaml"
    path.write_text("name: mini\nfactors:\n  model.mtm: {values: [true, false], label: MTM}\n"
                    "reference: {model.mtm: true}\nseeds: {min: 3, max: 4, until: decided}\nmetric: val_top1\n")
    spec = load_spec(path)
    options = RunOptions(storage=str(tmp_path / "runs"), epochs=1, overrides=dict(TINY_SET))
    outcome = run_experiment(spec, options)
    folder = tmp_path / "runs" / "mini"
    records = [json.loads(p.read_text()) for p in folder.rglob(RESULT)]
    assert len(outcome.failed) == 0 and all(r["status"] == "finished" for r in records)
    # The rounds' own rule on the first 3 seeds says whether the 4th seed was needed.
    first = [plan for plan in expand(spec, "quick", options.cli_overrides()) if plan.seed <= 3]
    values = {h: r["best"]["val_top1"] for h, r in scan_results(options_location(options, "mini")).items()}
    decided = round_decisions(first, values, "mtm=true", 0.5, True)["mtm=false"] in ("better", "worse", "equivalent")
    assert outcome.planned == len(records) == (6 if decided else 8)
    assert sorted({r["seed"] for r in records}) == ([1, 2, 3] if decided else [1, 2, 3, 4])
    # The table says the same, with the seeds the decision used.
    planned = [plan for plan in expand(spec, "quick", options.cli_overrides()) if plan.seed <= (3 if decided else 4)]
    final = round_decisions(planned, values, "mtm=true", 0.5, True)["mtm=false"]
    table = (build_report(folder, metrics=["top1"], formats=["md"], say=lambda line: None) / "table.md").read_text()
    (row,) = [line for line in table.splitlines() if line.startswith("| ✗ |")]
    assert f"| {final or '—'} |" in row
    assert f"Every row used {3 if decided else 4} seeds." in table
    again = run_experiment(spec, options)
    assert (again.planned, again.skipped, len(again.finished)) == (outcome.planned, outcome.planned, outcome.planned)
    assert len(list(folder.rglob(RESULT))) == len(records)


def options_location(options: RunOptions, name: str):
    from ablations.storage import locate

    return locate(options.storage, name)
