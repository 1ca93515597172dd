"""`matrix` as a user meets it: help, exit codes, and one-line configuration errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.catalog import FORMATS
from matrix.cli import app
from matrix.errors import ExitCode


def _run(*args: str):
    return CliRunner().invoke(app, ["run", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repeats", "0"], "error: --repeats: must be >= 1 (got 0)"),
        (["--warmup", "-1"], "error: --warmup: must be >= 0 (got -1)"),
        (
            ["--cache", "cold,hot"],
            "error: --cache: unknown cache mode 'hot'; choose from cold, cold-model, warm",
        ),
        (
            ["--backend", "kubernetes"],
            "error: --backend: must be 'local', 'docker', 'venv', 'ray' or 'auto' "
            "(got 'kubernetes')",
        ),
        (
            ["--models", "missing/model.keras"],
            "error: --models: model file 'missing/model.keras' does not exist; "
            "give a path to a .keras, .h5 or SavedModel",
        ),
        (
            ["--run-id", "../elsewhere"],
            "error: --run-id: '../elsewhere' is not a folder name; use letters, digits, '.', '_' "
            "and '-', not starting with '.' or '-', and not 'latest'",
        ),
        (
            ["--run-id", "nightly-1", "--resume", "20261127-183000-ab12"],
            "error: --run-id and --resume: give one (--resume continues an existing run)",
        ),
        (
            ["--resume", "20261127-183000-ab12"],
            "error: --resume: no run '20261127-183000-ab12' under results/",
        ),
    ],
)
def test_configuration_errors_are_one_line_with_exit_2(in_tmp, args, message) -> None:
    result = _run(*args)
    assert result.exit_code == 2
    assert result.stderr == message + "\n"
    assert not (in_tmp / "results").exists()


def test_unknown_format_lists_the_choices(in_tmp) -> None:
    result = _run("--formats", "h6")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --formats: unknown format 'h6'; choose from ")
    assert all(name in result.stderr for name in FORMATS)


def test_errors_in_the_local_matrix_yaml_name_it(in_tmp: Path) -> None:
    (in_tmp / "matrix.yaml").write_text("repeats: 0\n")
    result = _run()
    assert (result.exit_code, result.stderr) == (
        2,
        "error: matrix.yaml: repeats: must be >= 1 (got 0)\n",
    )


def test_explicit_config_wins_over_the_local_file(in_tmp: Path) -> None:
    (in_tmp / "matrix.yaml").write_text("repeats: 0\n")
    (in_tmp / "other.yaml").write_text("warmup: -2\n")
    result = _run("--config", "other.yaml")
    assert result.stderr == "error: other.yaml: warmup: must be >= 0 (got -2)\n"


def test_a_flag_overrides_a_bad_file_value(in_tmp: Path) -> None:
    (in_tmp / "matrix.yaml").write_text("repeats: 0\n")
    result = _run("--repeats", "2", "--backend", "none")
    assert result.stderr == (
        "error: --backend: must be 'local', 'docker', 'venv', 'ray' or 'auto' (got 'none')\n"
    )


def test_help_documents_the_exit_codes() -> None:
    result = _run("--help")
    assert result.exit_code == 0
    for line in [
        "0  every cell measured",
        "1  some cell has status error",
        "2  configuration error",
        "3  the backend could not run the harness",
    ]:
        assert line in result.stdout


def test_the_readme_table_lists_exactly_the_exit_codes_of_the_enum() -> None:
    """Each command's --help epilog takes its numbers from `ExitCode`; the README's table is
    the one copy written by hand, so it is checked against the enum here."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    listed = [int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.M)]
    assert listed == sorted({int(code) for code in ExitCode})


def test_regression_is_an_explicit_alias_of_code_1() -> None:
    assert ExitCode.REGRESSION is ExitCode.CELLS_FAILED
    assert "REGRESSION" not in [code.name for code in ExitCode]  # aliases are not iterated


def test_python_dash_m_matrix_is_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "matrix", "run", "--repeats", "0"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert result.returncode == 2
    assert result.stderr == "error: --repeats: must be >= 1 (got 0)\n"


def test_cli_startup_imports_neither_pandas_nor_tensorflow() -> None:
    code = (
        "import sys, matrix.cli; "
        "print(sorted(m for m in ('pandas', 'tensorflow', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_local_harness_failure_is_exit_3_in_one_line(tmp_path: Path) -> None:
    """A local harness that fails exits 3 with one line naming its cause and its log.

    A `tensorflow` package that raises on import shadows the real one in the harness's
    processes only (PYTHONPATH reaches them; `matrix` itself never imports TensorFlow), so the
    real harness really fails its environment probe.
    """
    shadow = tmp_path / "shadow" / "tensorflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('planted: tensorflow is broken')\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "matrix",
            "run",
            "--backend",
            "local",
            "--models",
            "dense-10k",
            "--formats",
            "h5",
            "--cache",
            "warm",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--results-dir",
            str(tmp_path / "results"),
            "--no-report",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(shadow.parent)},
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line: no traceback, no log dump
    assert proc.stderr.startswith("error: local-tf")
    assert "the harness exited with code 1: ImportError: planted: tensorflow is broken" in (
        proc.stderr
    )
    assert "full log: " in proc.stderr
