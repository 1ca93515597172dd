"""`--repeats auto`'s stopping rule and the forked-trial agreement test (harness.precision).

The harness has no scipy, so its t quantiles and minimal detectable change are held to
matrix.results.stats (scipy) here; the rotation itself runs with a fake trial (a test double
beside the real-TF runs of tests/integration/test_forked_trials.py).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import t

from harness import precision
from harness.catalog import parse_model
from harness.contract import RunSpec
from harness.runner import ModelArtifacts, Run, Saved
from matrix.results import stats


def test_t_quantiles_match_scipy() -> None:
    worst = max(
        abs(precision.t_quantile(p, df) / t.ppf(p, df) - 1)
        for df in range(1, 120)
        for p in (0.6, 0.8, 0.975, 0.995, 0.9997)
    )
    assert worst < 1e-4


@pytest.mark.parametrize("spread", [0.02, 0.1, 0.4])
@pytest.mark.parametrize("repeats", [2, 6, 11, 30])
def test_detectable_change_is_the_verdict_rules(spread: float, repeats: int) -> None:
    for family in (1, 16):
        alpha = stats.ALPHA / family
        assert precision.detectable(spread, repeats, alpha) == pytest.approx(
            stats.detectable_at(spread, repeats, alpha), rel=1e-4
        )


def test_the_verdict_rule_has_one_set_of_defaults() -> None:
    assert (stats.THRESHOLD, stats.ALPHA, stats.POWER) == (
        precision.THRESHOLD,
        precision.ALPHA,
        precision.POWER,
    )


def test_median_interval_needs_six_loads_and_uses_exact_ranks() -> None:
    assert precision.median_ci([1.0, 2, 3, 4, 5]) is None
    assert precision.median_ci([6.0, 1, 5, 2, 4, 3]) == (1, 6)
    # n = 20: P(Binomial(20, 1/2) <= 5) = 0.0207 <= 0.025 < P(<= 6) = 0.0577: ranks 6 and 15.
    assert precision.median_ci([float(x) for x in range(1, 21)]) == (6, 15)
    assert precision.MIN_REPEATS == 6


def test_median_interval_covers_the_true_median_as_stated() -> None:
    """Skewed, heavy-tailed load times (log-normal): the interval is distribution-free."""
    rng = random.Random(7)
    for n in (6, 10, 25):
        covered = 0
        for _ in range(2000):
            sample = [math.exp(rng.gauss(0, 0.5)) for _ in range(n)]
            low, high = precision.median_ci(sample) or (math.inf, -math.inf)
            covered += low <= 1.0 <= high
        assert covered / 2000 >= 0.94  # at least 95 % by construction, minus sampling noise


def test_a_quiet_cell_stops_at_the_minimum_and_a_noisy_one_at_the_maximum() -> None:
    target = precision.Target()
    quiet = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0]
    assert precision.progress(quiet[:5], target, family=16).done is False
    found = precision.progress(quiet, target, family=16)
    assert found.reached and found.done and found.half_width == pytest.approx(0.02)
    rng = random.Random(1)
    noisy = [math.exp(rng.gauss(0, 0.3)) for _ in range(target.max_repeats)]
    assert not precision.progress(noisy[:-1], target, family=16).done
    at_max = precision.progress(noisy, target, family=16)
    assert at_max.done and not at_max.reached


def test_a_precise_median_is_not_enough_without_power() -> None:
    """An outlier leaves the median's interval tight but inflates the spread Welch's test sees:
    the cell stays until a change of the threshold would be detected in compare's family."""
    samples = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01, 0.99, 1.0, 1.0, 3.0]
    found = precision.progress(samples, precision.Target(), family=16)
    assert found.half_width is not None and found.half_width <= 0.05
    assert found.detectable is not None and found.detectable > precision.THRESHOLD
    assert not found.reached


def test_forked_loads_agree_disagree_or_cannot_tell() -> None:
    rng = random.Random(3)
    same = [(x, x * math.exp(rng.gauss(0, 0.02))) for x in (1.0,) * 10]
    assert precision.agreement(same).verdict == "agree"
    slower_fresh = [(1.0, 1.5 * math.exp(rng.gauss(0, 0.02))) for _ in range(10)]
    found = precision.agreement(slower_fresh)
    assert found.verdict == "disagree" and found.change == pytest.approx(0.5, abs=0.05)
    assert precision.agreement(slower_fresh[:5]).verdict == "undecided"  # no 95 % interval
    noisy = [(1.0, math.exp(rng.gauss(0, 0.5))) for _ in range(10)]
    assert precision.agreement(noisy).verdict == "undecided"


# ---- the rotation (a fake trial in place of the trial process) ---------------------------------


def _run(tmp_path: Path, **spec: object) -> Run:
    values = {
        "out": str(tmp_path),
        "run_id": "r",
        "env_id": "e",
        "models": ["dense-10k"],
        "formats": ["h5", "tflite"],
        "cache_modes": ["warm"],
        "repeats": None,
        "trial_process": "fresh",
        **spec,
    }
    return Run(RunSpec(**values))  # type: ignore[arg-type]


def _records(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]


def test_auto_repeats_rotation_lets_each_cell_leave_when_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """h5 loads are steady (leaves at 6), tflite's noisy (runs to the maximum); rounds stay
    shuffled, and every cell gets a `precision` record saying what it reached."""
    run = _run(tmp_path, max_repeats=12)
    arts = ModelArtifacts(
        spec=parse_model("dense-10k"), saved={"h5": Saved("ok"), "tflite": Saved("ok")}
    )
    rng = random.Random(0)
    order: list[list[str]] = []

    def fake_trial(
        arts: object, fmt: str, mode: str, rnd: int, position: int, process: str = "fresh"
    ) -> float:
        if position == 0:
            order.append([])
        order[-1].append(fmt)
        run.writer.write("trial", format=fmt)
        return 1.0 + rng.uniform(-0.01, 0.01) if fmt == "h5" else math.exp(rng.gauss(0, 0.4))

    monkeypatch.setattr(run, "trial", fake_trial)
    run.run_trials([arts])
    run.writer.close()
    done = {r["format"]: r for r in _records(tmp_path) if r["kind"] == "precision"}
    assert done["h5"]["n"] == 6 and done["h5"]["reached"] is True
    assert done["h5"]["precision"] <= 0.05
    assert done["tflite"]["n"] == 12 and done["tflite"]["reached"] is False
    assert len(order) == 1 + 12  # the warm-up round, then rounds until the noisy cell's maximum
    assert {tuple(r) for r in order[:7]} == {("h5", "tflite"), ("tflite", "h5")}
    schedules = [r["trials_scheduled"] for r in _records(tmp_path) if r["kind"] == "schedule"]
    assert schedules[0] == 2 * (1 + 12) and schedules[-1] == 2 + 6 + 12


@pytest.mark.parametrize(
    ("formats", "repeats", "controls"),
    [(["h5", "tflite"], 5, {"h5": 3, "tflite": 3}), (["h5"], 3, {"h5": 2}), (["h5"], 1, {})],
)
def test_forked_cells_get_six_fresh_controls_fewer_than_their_rounds(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    formats: list[str],
    repeats: int,
    controls: dict[str, int],
) -> None:
    """The controls of the fork check: six in all where the rounds allow, never as many as a
    cell's forked trials (statistics take the process with more), in its first rounds."""
    run = _run(tmp_path, formats=formats, repeats=repeats, trial_process="forked", warmup=0)
    arts = ModelArtifacts(spec=parse_model("dense-10k"), saved={f: Saved("ok") for f in formats})
    made: list[tuple[str, str, int]] = []

    def fake_trial(
        arts: object, fmt: str, mode: str, rnd: int, position: int, process: str = "fresh"
    ) -> float:
        made.append((fmt, process, rnd))
        run.writer.write("trial", format=fmt)
        return 1.0

    monkeypatch.setattr(run, "trial", fake_trial)
    run.run_trials([arts])
    run.writer.close()
    fresh = Counter(fmt for fmt, process, _ in made if process == "fresh")
    assert fresh == controls
    assert Counter(fmt for fmt, process, _ in made if process == "forked") == dict.fromkeys(
        formats, repeats
    )
    assert all(rnd < controls[fmt] for fmt, process, rnd in made if process == "fresh")
    (check,) = [r for r in _records(tmp_path) if r["kind"] == "fork_check"]
    assert check["pairs"] == sum(controls.values())
