"""`matrix compare`: a planted 30 % slowdown fails CI, two runs of the same code do not.

The runs are real: two side-by-side harness runs of 100 TFLite loads each (tests/real_runs.py).

The planted slowdown copies run B and replaces the measured load times of its TFLite cell with
run A's own times × 1.3, trial by trial. Why A's times, not B's: on a busy test machine about
half of these 1.5 ms loads stall (4-20 ms), and with B's own times × 1.3 the test would
also measure whether B happened to stall more or less than A. A's times × 1.3 are exactly a
30 % slowdown of the same machine state, so the test checks what it means to: that `compare`
flags a true 30 % shift (on a busy machine: p = 0.06 at 60 loads, 0.0005 at 100). The false-alarm
side is checked on two independent real runs, where only the machine's noise differs.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matrix import dataset, stats
from matrix.cli import app
from matrix.compare import compare_runs
from matrix.dataset import load_runs
from matrix.stats import judge, p_values
from tests.real_runs import planted, read_lines, real_pair, write_lines


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return real_pair(tmp_path_factory, "many")


def _compare(*args: str):
    return CliRunner().invoke(app, ["compare", *args], env={"COLUMNS": "200"})


@pytest.mark.slow
def test_two_runs_of_the_same_code_exit_0(runs) -> None:
    """With alpha 0.01: any significance test calls two samples of the same thing different in
    alpha/2 of the comparisons (slower side), and on a loaded machine the 10 % threshold hardly
    helps (the median jumps between stalled and unstalled loads); at the default 0.05 this test
    would itself fail in ~2.5 % of sessions, at 0.01 in ~0.5 %."""
    result = _compare("--alpha", "0.01", str(runs[0]), str(runs[1]))
    assert result.exit_code == 0, result.output
    assert "dense-10k" in result.output and "slower" not in result.output


@pytest.mark.slow
def test_a_planted_30_percent_slowdown_exits_1_and_names_the_cell(runs, tmp_path) -> None:
    slow = planted(runs[1], tmp_path / "slow", "tflite", 1.3, loads_from=runs[0])
    result = _compare(str(runs[0]), str(slow))
    assert result.exit_code == 1, result.output
    row = next(line for line in result.output.splitlines() if "dense-10k" in line)
    assert "tflite" in row and "+30.0%" in row and "slower" in row
    assert "1 slower" in result.output


@pytest.mark.slow
def test_a_speedup_is_reported_but_does_not_fail(runs, tmp_path) -> None:
    fast = planted(runs[1], tmp_path / "fast", "tflite", 0.7, loads_from=runs[0])
    result = _compare(str(runs[0]), str(fast))
    assert result.exit_code == 0, result.output
    assert "faster" in result.output


@pytest.mark.slow
def test_cells_that_measured_different_things_are_not_comparable(runs, tmp_path) -> None:
    """Another TensorFlow in B: even a 30 % slowdown says nothing about the code, no exit 1."""
    slow = planted(runs[1], tmp_path / "slow", "tflite", 1.3, loads_from=runs[0])
    records = read_lines(slow)
    for record in records:
        if record["kind"] == "environment":
            record["tensorflow"] = "2.20.0"
    write_lines(slow, records)
    comparison = compare_runs(load_runs([runs[0]]), load_runs([slow]))
    (cell,) = comparison.cells.to_dict("records")
    assert cell["verdict"] == "not comparable"
    assert cell["note"].startswith("TF 2.21") and cell["note"].endswith("→ 2.20.0")
    assert _compare(str(runs[0]), str(slow)).exit_code == 0


@pytest.mark.slow
def test_a_cell_with_one_ok_trial_is_not_comparable(runs, tmp_path) -> None:
    records = read_lines(runs[1])
    trials = [r for r in records if r["kind"] == "trial"]
    for record in trials[1:]:
        record["status"], record["reason"] = "error", "OSError: bad file"
    write_lines(tmp_path / "broken", records)
    (cell,) = compare_runs(load_runs([runs[0]]), load_runs([tmp_path / "broken"])).cells.to_dict(
        "records"
    )
    assert (cell["n_b"], cell["verdict"]) == (1, "not comparable")
    assert "fewer than 2 ok trials" in cell["note"]


def test_significance_and_threshold_are_both_needed() -> None:
    """Plain numbers: a large change within the noise, and a tiny change beyond it."""
    steady = [1.00 + i * 1e-4 for i in range(20)]
    noisy, tiny, clear, single = judge([
        ([1.0, 3.0, 1.1, 2.9], [1.5, 3.2, 1.4, 3.1]),
        (steady, [x * 1.05 for x in steady]),
        (steady, [x * 1.3 for x in steady]),
        ([1.0], [2.0, 2.1]),
    ])
    assert noisy.change > 0.10 and noisy.p_value >= 0.05 and noisy.verdict == "same"
    assert tiny.p_value < 0.05 and tiny.change < 0.10 and tiny.verdict == "same"
    assert clear.verdict == "slower" and clear.change == pytest.approx(0.3)
    assert single.verdict == "not comparable"


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch):
    """A worker of its own for the test (`start_tests`), shut down after it."""
    monkeypatch.setattr(stats, "_tester", None)
    stats.start_tests()
    started = stats._tester
    yield started
    started.shutdown()


def _pairs() -> list[tuple[list[float], list[float]]]:
    """Pairs of mixed sizes, with and without ties, small (exact test) and large (normal)."""
    rng = random.Random(7)
    return [
        ([0.1, 0.1, 0.5], [0.2, 0.3, 0.9]),  # a tie: scipy would use the normal method...
        ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6]),  # ...and for these two, of the same sizes, exact
        ([0.3, 0.1, 0.7], [0.2, 0.6, 0.8]),
        *[([rng.random() for _ in range(n)], [rng.random() for _ in range(m)])
          for n, m in [(5, 8), (20, 20), (20, 20), (1, 4)]],
    ]


def _one_call_per_pair(pairs: list[tuple[list[float], list[float]]]) -> list[float]:
    from scipy.stats import mannwhitneyu

    return [mannwhitneyu(a, b).pvalue if min(len(a), len(b)) > 1 else math.nan
            for a, b in pairs]


@pytest.mark.parametrize("where", ["here", "worker"])
def test_batched_p_values_equal_one_scipy_call_per_pair(where: str, request) -> None:
    if where == "worker":
        request.getfixturevalue("worker")
    pairs = _pairs()
    assert p_values(pairs) == pytest.approx(_one_call_per_pair(pairs), nan_ok=True)
    assert p_values([]) == [] and math.isnan(p_values([([0.1], [0.2, 0.3])])[0])


def test_a_killed_worker_leaves_the_tests_to_this_process(worker) -> None:
    os.kill(worker.submit(os.getpid).result(), signal.SIGKILL)
    pairs = _pairs()
    assert p_values(pairs) == pytest.approx(_one_call_per_pair(pairs), nan_ok=True)
    assert stats._tester is None


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("end", ["raise SystemExit('failed')", "os._exit(1)"])
def test_a_command_ending_while_the_worker_imports_leaves_no_process(end: str) -> None:
    """`matrix` fails while scipy is still being imported, or ends with os._exit as its console
    script does (no interpreter teardown, so concurrent.futures never stops the worker)."""
    code = ("import multiprocessing, os; from matrix import stats; stats.start_tests(); "
            "print(*[p.pid for p in multiprocessing.active_children()], flush=True); " + end)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parent.parent)
    assert done.returncode == 1
    (pid,) = map(int, done.stdout.split())
    deadline = time.monotonic() + 30
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(pid)


def test_a_big_load_starts_the_worker_and_compare_tests_there(
    tmp_path: Path, record, jsonl, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, scale in (("a", 1.0), ("b", 1.5)):
        (tmp_path / name).mkdir()
        jsonl(tmp_path / name / "env.jsonl",
              [record("trial", model="m", format="h5", cache_mode="warm", load_s=scale * i)
               for i in (1.0, 1.1, 1.2, 1.3, 1.4)])
    monkeypatch.setattr(stats, "_tester", None)
    here = compare_runs(load_runs([tmp_path / "a"]), load_runs([tmp_path / "b"])).cells
    assert stats._tester is None  # 2 kB of records: not worth a worker
    monkeypatch.setattr(dataset, "BIG_LOAD", 0)
    loaded = [load_runs([tmp_path / name]) for name in ("a", "b")]
    assert stats._tester is not None
    try:
        in_worker = compare_runs(*loaded).cells
    finally:
        stats._tester.shutdown()
    assert in_worker.to_dict("records") == here.to_dict("records")
    assert here["verdict"].tolist() == ["slower"]


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
        trials = [record("trial", model="m", format=fmt, cache_mode="warm", load_s=0.1 * i)
                  for i in (1, 2, 3)]
        jsonl(tmp_path / name / "env.jsonl", trials)
    result = _compare("--results-dir", str(tmp_path), "a", "b")
    assert result.exit_code == 2
    assert result.stderr == "error: nothing to compare: no cell was measured in both a and b\n"


def test_help_documents_the_regression_exit_code() -> None:
    result = CliRunner().invoke(app, ["compare", "--help"], env={"COLUMNS": "200"})
    assert "1  regression found" in result.output
