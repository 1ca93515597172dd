"""`matrix compare` at the defaults a user gets: a planted 2x slowdown fails CI, two runs of the
same code flag nothing, a pair too noisy to tell says so, and cells that measured different
things are not compared.

The runs are real: two side-by-side harness runs of the default model (MobileNetV2) in h5 and
TFLite at the default repeats (tests/integration/real_runs.py). The planted slowdown copies run A
and
doubles the measured load times of its h5 cell, trial by trial: exactly a 2x slowdown of the
same machine state, so the test checks what it means to — that `compare` flags a true 2x shift
at the default repeats, threshold and alpha — and the TFLite cell, left as measured, must not
be flagged. MobileNetV2's h5 loads take ~1 s of CPU, so their spread (SD of log load time
~0.05-0.15 on an otherwise idle 2-core machine) is far inside what 5 loads need to see 2x. The
false-alarm side is checked on the two independent real runs, where only the noise differs.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import t as t_dist
from scipy.stats import ttest_ind
from typer.testing import CliRunner

from matrix.cli import app
from matrix.report.compare import compare_runs
from matrix.results import stats
from matrix.results.dataset import load_runs
from matrix.results.stats import ALPHA, POWER, THRESHOLD, judge, padded, repeats_needed, row_tests
from tests.conftest import ENV_ID
from tests.integration.real_runs import (
    GATE_MODEL,
    is_measured,
    planted,
    read_lines,
    real_pair,
    write_lines,
)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return real_pair(tmp_path_factory, "gate")


def _compare(*args: str):
    return CliRunner().invoke(app, ["compare", *args], env={"COLUMNS": "200"})


def _row(output: str, fmt: str) -> str:
    return next(line for line in output.splitlines() if re.search(rf"{GATE_MODEL} +{fmt} ", line))


def edited(source: Path, dest: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of run `source` with `edit` applied to every record."""
    records = read_lines(source)
    for record in records:
        edit(record)
    write_lines(dest, records)
    return dest


@pytest.mark.slow
def test_a_planted_2x_slowdown_at_the_defaults_exits_1_and_names_the_cell(runs, tmp_path) -> None:
    slow = planted(runs[0], tmp_path / "slow", "h5", 2.0)
    result = _compare(str(runs[0]), str(slow))
    assert result.exit_code == 1, result.output
    row = _row(result.output, "h5")
    assert "+100.0%" in row and "slower" in row
    assert "slower" not in _row(result.output, "tflite")
    cells = compare_runs(load_runs([runs[0]]), load_runs([slow])).cells
    assert list(cells.loc[cells["verdict"] == "slower", "format"]) == ["h5"]
    assert "1 slower," in result.output


@pytest.mark.slow
def test_two_runs_of_the_same_code_flag_nothing(runs) -> None:
    """At the defaults. Each cell is a null comparison, so a false alarm needs p < alpha AND a
    median change beyond the threshold; two cells, so this can fail by chance in a few % of
    sessions (the rate `alpha` is about), never systematically."""
    result = _compare(str(runs[0]), str(runs[1]))
    cells = compare_runs(load_runs([runs[0]]), load_runs([runs[1]])).cells
    assert set(cells["verdict"]) <= {"same", "underpowered"}, result.output
    assert result.exit_code == (5 if (cells["verdict"] == "underpowered").any() else 0)
    assert "slower" not in result.output and "faster" not in result.output


@pytest.mark.slow
def test_a_noisy_small_pair_is_underpowered_and_exits_5(runs, tmp_path) -> None:
    """Run A against a copy of itself cut to its first 3 loads per cell: no change at all (p 1),
    and yet 3 noisy loads could not have shown a 20 % one. A quiet machine can make 3 real
    loads agree within a few percent (then 3 are enough), so the kept loads get a busy host's
    spread (×0.8, ×1, ×1.3), the same in both copies."""
    kept: dict[str, int] = {}
    busy = (0.8, 1.0, 1.3)

    def first_three(record: dict[str, Any]) -> None:
        if record["kind"] == "trial" and record["status"] == "ok" and record["phase"] == "measure":
            kept[record["format"]] = kept.get(record["format"], 0) + 1
            if kept[record["format"]] > 3:
                record["status"], record["reason"] = "error", "left out by the test"
            else:
                record["load_s"] *= busy[kept[record["format"]] - 1]

    small = edited(runs[0], tmp_path / "small", first_three)
    result = _compare(str(small), str(small))
    assert result.exit_code == 5, result.output
    assert "underpowered" in _row(result.output, "h5")
    assert "underpowered" in _row(result.output, "tflite")
    assert "2 underpowered" in result.output and "repeats per side" in result.output
    assert "±" in _row(result.output, "h5")  # the detectable change, e.g. ±84%
    allowed = _compare("--allow-underpowered", str(small), str(small))
    assert allowed.exit_code == 0, allowed.output


@pytest.mark.slow
def test_a_speedup_is_reported_but_does_not_fail(runs, tmp_path) -> None:
    fast = planted(runs[0], tmp_path / "fast", "h5", 0.5)
    result = _compare("--allow-underpowered", str(runs[0]), str(fast))
    assert result.exit_code == 0, result.output
    assert "faster" in _row(result.output, "h5")


@pytest.mark.slow
def test_a_calibration_drift_is_warned_and_normalise_removes_it(runs, tmp_path) -> None:
    """Run B's machine was half as fast (its calibration took twice as long) and its h5 loads
    took twice as long: slower code or a slower machine? The raw comparison says slower and
    warns; --normalise rescales B to A's machine speed: the h5 change is gone, and the TFLite
    loads, unchanged in B, now count as twice as fast."""
    a_calibration = read_lines(runs[0])[1]["calibration_s"]
    slow = planted(runs[0], tmp_path / "slow", "h5", 2.0)

    def slower_machine(record: dict[str, Any]) -> None:
        if record["kind"] == "environment":
            record["calibration_s"] = 2 * a_calibration

    drifted = edited(slow, tmp_path / "drifted", slower_machine)
    raw = _compare(str(runs[0]), str(drifted))
    assert raw.exit_code == 1, raw.output
    for fmt in ("h5", "tflite"):
        assert "calibration +100%: machine speed differs (--normalise)" in _row(raw.output, fmt)
    drift = f"calibration (machine speed) differs by more than {THRESHOLD:.0%}: test-env +100%"
    assert drift in raw.output
    normalised = _compare("--normalise", "--allow-underpowered", str(runs[0]), str(drifted))
    assert normalised.exit_code == 0, normalised.output
    assert "+0.0%" in _row(normalised.output, "h5")
    assert "-50.0%" in _row(normalised.output, "tflite")
    assert "B normalised by calibration (+100%)" in _row(normalised.output, "h5")


def _other_host(record: dict[str, Any]) -> None:
    if record["kind"] == "environment":
        record["hostname"] = "elsewhere"


def _imagenet(record: dict[str, Any]) -> None:
    if record["kind"] == "plan":
        record["weights"] = "imagenet"


def _container(record: dict[str, Any]) -> None:
    if record["kind"] == "trial":
        record["isolation"] = "container"


def _other_cpu(record: dict[str, Any]) -> None:
    if record["kind"] == "environment":
        record["cpu_model"] = "Some Other CPU"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (_other_host, "host "),
        (_imagenet, "weights none → imagenet"),
        (_container, "isolation process → container"),
        (_other_cpu, "→ Some Other CPU"),
        (None, "backend local → docker"),
    ],
)
def test_cells_measured_differently_are_not_comparable(runs, tmp_path, edit, named) -> None:
    """Even a 2x slowdown says nothing about the code when the two runs measured on another
    host, CPU, backend, isolation or weights: not comparable, the difference named, no exit 1."""
    slow = planted(runs[0], tmp_path / "slow", "h5", 2.0)
    if edit is None:  # a Docker sweep's manifest (the environment id is the same)
        run_id = read_lines(slow)[0]["run_id"]
        (slow / "manifest.json").write_text(json.dumps({"run_id": run_id, "backend": "docker"}))
    else:
        edited(slow, slow, edit)
    comparison = compare_runs(load_runs([runs[0]]), load_runs([slow]))
    assert set(comparison.cells["verdict"]) == {"not comparable"}
    assert all(named in note for note in comparison.cells["note"]), comparison.cells["note"]
    assert _compare(str(runs[0]), str(slow)).exit_code == 0


@pytest.mark.slow
def test_a_field_an_older_run_lacks_is_unknown_not_a_difference(runs, tmp_path) -> None:
    """A schema-1 run has no isolation, calibration or weights: compared, not refused."""

    def older(record: dict[str, Any]) -> None:
        for name in ("isolation", "calibration_s", "calibration_end_s", "weights"):
            record.pop(name, None)

    old = edited(planted(runs[0], tmp_path / "slow", "h5", 2.0), tmp_path / "old", older)
    cells = compare_runs(load_runs([old]), load_runs([runs[0]])).cells.set_index("format")
    assert cells.loc["h5", "verdict"] == "faster" and cells.loc["h5", "note"] == ""


@pytest.mark.slow
def test_a_cell_with_one_ok_trial_is_not_comparable(runs, tmp_path) -> None:
    records = read_lines(runs[1])
    trials = [r for r in records if is_measured(r, "h5")]
    for record in trials[1:]:
        record["status"], record["reason"] = "error", "OSError: bad file"
    write_lines(tmp_path / "broken", records)
    cells = compare_runs(load_runs([runs[0]]), load_runs([tmp_path / "broken"])).cells
    cell = cells.set_index("format").loc["h5"]
    assert (cell["n_b"], cell["verdict"]) == (1, "not comparable")
    assert "fewer than 2 ok trials" in cell["note"]


# ---- the rule on plain numbers (unit tests beside the real runs) ------------------------------


def test_significance_threshold_and_power_are_all_needed() -> None:
    steady = [1.00 + i * 1e-4 for i in range(20)]
    noisy, tiny, clear, single, few = judge(
        [
            ([1.0, 3.0, 1.1, 2.9], [1.6, 3.6, 1.7, 3.5]),
            (steady, [x * 1.05 for x in steady]),
            (steady, [x * 1.3 for x in steady]),
            ([1.0], [2.0, 2.1]),
            ([1.0, 1.02, 0.98], [1.01, 0.99, 1.0]),
        ]
    )
    assert noisy.change > THRESHOLD and noisy.p_value >= ALPHA
    assert noisy.detectable > THRESHOLD and noisy.verdict == "underpowered"
    assert tiny.p_value < ALPHA and tiny.change < THRESHOLD and tiny.verdict == "same"
    assert clear.verdict == "slower" and clear.change == pytest.approx(0.3)
    assert single.verdict == "not comparable"
    assert few.detectable < THRESHOLD and few.verdict == "same"  # 2 % spread: 3 loads suffice


def test_the_old_rank_test_could_not_flag_3_against_3_and_this_one_can() -> None:
    """The issue's reproduction: every load doubled, 3 trials a side. Mann-Whitney's smallest
    two-sided p at 3 vs 3 is 0.1; Welch's t on the logs flags it."""
    from scipy.stats import mannwhitneyu

    a = [0.50, 0.55, 0.61]
    assert mannwhitneyu(a, [2 * x for x in a]).pvalue == pytest.approx(0.1)
    (change,) = judge([(a, [2 * x for x in a])])
    assert change.verdict == "slower" and change.p_value < 0.01


def test_samples_without_spread_are_judged_exactly() -> None:
    """Test doubles time nothing: constant samples. Identical → same; different → p 0."""
    same, double, within = judge(
        [([0.1] * 3, [0.1] * 3), ([0.1] * 3, [0.2] * 3), ([0.1] * 3, [0.105] * 3)]
    )
    assert (same.p_value, same.detectable, same.verdict) == (1.0, 0.0, "same")
    assert (double.p_value, double.detectable, double.verdict) == (0.0, 0.0, "slower")
    assert within.verdict == "same"  # certain, but within the threshold


def test_the_detectable_change_is_what_the_test_detects_at_its_power() -> None:
    """Simulate pairs of 5 lognormal loads a side, the second shifted by exactly the MDC of
    their spread: the test flags about POWER of them (its definition)."""
    rng = np.random.default_rng(11)
    n, spread = 5, 0.2
    shift = math.log1p(stats.detectable_at(spread, n))
    a, b = rng.normal(0, spread, (2, 20000, n))
    p = row_tests(np.exp(a), np.exp(b + shift))[0]
    assert np.mean(p < ALPHA) == pytest.approx(POWER, abs=0.03)


def test_a_family_of_unchanged_cells_flags_anything_at_most_alpha_of_the_time() -> None:
    """16 cells (a default run) where nothing changed, 500 simulated comparisons of 5 noisy
    loads a side: per-cell tests at alpha would flag some cell in ~1 - 0.95^16 of them (the
    threshold trims that only for quiet cells); the family rule in at most alpha."""
    rng = np.random.default_rng(5)
    flagged = 0
    for _ in range(500):
        a, b = np.exp(rng.normal(0, 0.3, (2, 16, 5)))
        verdicts = [c.verdict for c in judge(list(zip(a.tolist(), b.tolist())))]
        flagged += any(v in ("slower", "faster") for v in verdicts)
    assert flagged / 500 <= ALPHA


def test_the_reports_vectorised_verdicts_are_judges() -> None:
    """The report judges every pair of environments at once (`family_verdicts`); per family it
    must say exactly what `judge` says of the same cells."""
    rng = np.random.default_rng(3)
    families = []
    for shift in (0.0, 0.7, 0.05):  # nothing, a 2x slowdown in one cell, a small change
        a = np.exp(rng.normal(0, 0.1, (6, 5)))
        b = np.exp(rng.normal(0, 0.1, (6, 5)) + np.array([shift, 0, 0, 0, 0, 0])[:, None])
        families.append((a, b))
    by_judge = [[c.verdict for c in judge(list(zip(a.tolist(), b.tolist())))] for a, b in families]
    x, y = (np.concatenate([f[side] for f in families]) for side in (0, 1))
    family = 6
    tests = row_tests(x, y, ALPHA / family)
    change = np.median(y, axis=1) / np.median(x, axis=1) - 1
    vectorised = stats.family_verdicts(
        change.reshape(3, family), tests[0].reshape(3, family), tests[1].reshape(3, family)
    )
    assert vectorised.tolist() == by_judge
    assert by_judge[1][0] == "slower"


def test_repeats_needed_is_the_fewest_that_reach_the_threshold() -> None:
    n = repeats_needed(0.1)
    assert stats.detectable_at(0.1, n) <= THRESHOLD < stats.detectable_at(0.1, n - 1)
    assert repeats_needed(5.0, cap=30) is None


def _pairs() -> list[tuple[list[float], list[float]]]:
    """Pairs of mixed sizes, one with a single value (untested)."""
    rng = random.Random(7)
    return [
        (
            [rng.lognormvariate(0, 0.3) for _ in range(n)],
            [rng.lognormvariate(0.2, 0.5) for _ in range(m)],
        )
        for n, m in [(3, 3), (5, 8), (20, 20), (2, 2), (1, 4)]
    ]


def _one_scipy_call_per_pair(pairs: list[tuple[list[float], list[float]]]) -> list[float]:
    return [
        ttest_ind(np.log(a), np.log(b), equal_var=False).pvalue
        if min(len(a), len(b)) > 1
        else math.nan
        for a, b in pairs
    ]


def _mdc_by_scipy_stats(pairs: list[tuple[list[float], list[float]]]) -> list[float]:
    """The minimal detectable change of each pair with scipy.stats' t quantiles, one at a time."""
    out = []
    for a, b in pairs:
        if min(len(a), len(b)) < 2:
            out.append(math.nan)
            continue
        share_a, share_b = (np.var(np.log(s), ddof=1) / len(s) for s in (a, b))
        se = math.sqrt(share_a + share_b)
        df = (share_a + share_b) ** 2 / (share_a**2 / (len(a) - 1) + share_b**2 / (len(b) - 1))
        out.append(math.expm1((t_dist.ppf(1 - ALPHA / 2, df) + t_dist.ppf(POWER, df)) * se))
    return out


def test_batched_tests_equal_scipy_stats_per_pair() -> None:
    """p and the MDC, computed for all rows at once with scipy.special's t distribution, are
    what scipy.stats gives one pair at a time."""
    pairs = _pairs()
    p, mdc = row_tests(padded([a for a, _ in pairs]), padded([b for _, b in pairs]))
    assert p.tolist() == pytest.approx(_one_scipy_call_per_pair(pairs), nan_ok=True)
    assert mdc.tolist() == pytest.approx(_mdc_by_scipy_stats(pairs), nan_ok=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "."], "error: no run 'nope': neither a folder of records files nor a run under"),
        (["--threshold", "0", "a", "b"], "error: --threshold must be > 0 and --alpha between"),
        (["--alpha", "1.5", "a", "b"], "error: --threshold must be > 0 and --alpha between"),
    ],
)
def test_configuration_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = _compare("--results-dir", str(tmp_path), *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)


def test_runs_without_a_common_cell_exit_2(tmp_path: Path, record, jsonl) -> None:
    for name, fmt in (("a", "h5"), ("b", "tflite")):
        (tmp_path / name).mkdir()
        trials = [
            record("trial", model="m", format=fmt, cache_mode="warm", load_s=0.1 * i)
            for i in (1, 2, 3)
        ]
        jsonl(tmp_path / name / f"{ENV_ID}.jsonl", trials)
    result = _compare("--results-dir", str(tmp_path), "a", "b")
    assert result.exit_code == 2
    assert result.stderr == "error: nothing to compare: no cell was measured in both a and b\n"


def test_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(app, ["compare", "--help"], env={"COLUMNS": "200"})
    assert "1  regression found" in result.output
    assert "5  no regression, but some cell is underpowered" in result.output


@pytest.mark.parametrize(("in_container", "comparable"), [(True, True), (False, False)])
def test_a_containers_hostname_is_not_a_machine(
    tmp_path: Path, record, jsonl, in_container: bool, comparable: bool
) -> None:
    """In a container the hostname is the container's id, new every night: two nightly runs
    merged without their manifests (as the GitHub workflow merges them) are on an unknown
    host, not on two different ones. Outside containers a different hostname is a different
    machine."""
    for name, host in (("a", "c0ffee000001"), ("b", "c0ffee000002")):
        env = record("environment", hostname=host, in_container=in_container, cpu_model="x")
        trials = [
            record("trial", model="m", format="h5", cache_mode="warm", load_s=0.1 * (1 + i / 100))
            for i in range(5)
        ]
        (tmp_path / name).mkdir()
        jsonl(tmp_path / name / f"{ENV_ID}.jsonl", [env, *trials])
    cells = compare_runs(load_runs([tmp_path / "a"]), load_runs([tmp_path / "b"])).cells
    assert (cells["verdict"] != "not comparable").all() == comparable, cells.to_dict("records")
    assert ("host" in cells["note"].iloc[0]) != comparable
