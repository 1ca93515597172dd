"""Planning: config axes → environments and skipped cells (pure), and the `matrix plan` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from matrix.cli import app
from matrix.errors import ConfigError
from matrix.plan.compat import version_key
from matrix.plan.config import load_config
from matrix.plan.environments import Environment, expand


def _plan(**overrides: Any) -> tuple[dict[str, Environment], dict[str, str]]:
    """Environments by id and skip reasons by id, for the built-in matrix plus `overrides`."""
    environments, skipped = expand(load_config(None, overrides))
    return {env.id: env for env in environments}, {cell.id: cell.reason for cell in skipped}


def _cli(*args: str):
    return CliRunner().invoke(app, ["plan", *args])


def test_the_default_plan_is_current_tf_on_its_newest_python(in_tmp: Path) -> None:
    environments, skipped = _plan()
    assert skipped == {}
    assert list(environments) == ["tf2.21-py3.13-cpu"]
    env = environments["tf2.21-py3.13-cpu"]
    assert (env.tf, env.base_image, env.template) == (
        "2.21.0",
        "python:3.13-slim-trixie",
        "cpu.Dockerfile.j2",
    )
    assert env.packages == (
        "tensorflow-cpu==2.21.0",
        "keras==3.13.2",
        "h5py<3.15",
        "protobuf<8",
        "ai-edge-litert==2.3.0",
    )
    assert env.env_vars == ()


def test_old_tf_on_gpu_runs_python_3_8_on_the_official_cuda_image() -> None:
    environments, skipped = _plan(tf="2.2,2.3", device=["gpu"])
    assert skipped == {}
    assert list(environments) == ["tf2.2-py3.8-gpu", "tf2.3-py3.8-gpu"]
    old = environments["tf2.2-py3.8-gpu"]
    assert (old.tf, old.base_image, old.template, old.python_from_apt) == (
        "2.2.3",  # the minor's latest release, not the image's 2.2.2: the image gives CUDA only
        "tensorflow/tensorflow:2.2.2-gpu",
        "gpu.Dockerfile.j2",
        True,
    )
    cpu, _ = _plan(tf="2.2", python="3.8")
    assert old.packages == ("tensorflow==2.2.3", *cpu["tf2.2-py3.8-cpu"].packages[1:])
    assert environments["tf2.3-py3.8-gpu"].base_image == "tensorflow/tensorflow:2.3.4-gpu"


def test_an_exact_release_runs_on_its_minor_s_newest_cuda_image() -> None:
    environments, _ = _plan(tf="2.2.1", device=["gpu"])
    env = environments["tf2.2-py3.8-gpu"]
    assert (env.tf, env.packages[0], env.base_image) == (
        "2.2.1",
        "tensorflow==2.2.1",
        "tensorflow/tensorflow:2.2.2-gpu",
    )


def test_old_tf_on_cpu_uses_python_3_8_slim() -> None:
    environments, _ = _plan(tf="2.2,2.3")
    assert list(environments) == ["tf2.2-py3.8-cpu", "tf2.3-py3.8-cpu"]
    assert environments["tf2.2-py3.8-cpu"].base_image == "python:3.8-slim"
    assert environments["tf2.2-py3.8-cpu"].packages[0] == "tensorflow-cpu==2.2.3"


def test_a_python_the_tf_has_no_wheel_for_is_skipped_with_the_range() -> None:
    assert _plan(tf="2.2", python="3.11") == (
        {},
        {"tf2.2-py3.11-cpu": "TensorFlow 2.2 has wheels for Python 3.6–3.8 only"},
    )


def test_a_gpu_cell_of_old_tf_on_another_python_is_skipped_naming_the_image() -> None:
    _, skipped = _plan(tf="2.2,2.10", python="3.7,3.10", device=["gpu"])
    reason = "GPU cells of TF < 2.14 run Python 3.8 on the official CUDA image tensorflow/"
    assert skipped == {
        "tf2.2-py3.7-gpu": reason + "tensorflow:2.2.2-gpu",
        "tf2.2-py3.10-gpu": reason + "tensorflow:2.2.2-gpu",
        "tf2.10-py3.7-gpu": reason + "tensorflow:2.10.0-gpu",
        "tf2.10-py3.10-gpu": reason + "tensorflow:2.10.0-gpu",
    }


def test_a_python_older_than_the_harness_allows_is_skipped_even_with_wheels() -> None:
    assert _plan(tf="2.2", python="3.6,3.7") == (
        {},
        {
            "tf2.2-py3.6-cpu": "the harness needs Python >= 3.8",
            "tf2.2-py3.7-cpu": "the harness needs Python >= 3.8",
        },
    )


def test_auto_plans_every_minor_on_both_devices_at_or_above_the_harness_floor() -> None:
    minors = ",".join(f"2.{n}" for n in range(2, 22))
    environments, skipped = _plan(tf=minors, device=["cpu", "gpu"])
    assert skipped == {}
    assert len(environments) == 40
    assert all(version_key(env.python) >= (3, 8) for env in environments.values())


@pytest.mark.parametrize(
    ("tf", "device", "env_id"),
    [
        ("2.21", "cpu", "tf2.21-py3.13-cpu"),
        ("2.15", "cpu", "tf2.15-py3.11-cpu"),
        ("2.9", "cpu", "tf2.9-py3.10-cpu"),
        ("2.14", "gpu", "tf2.14-py3.10-gpu"),  # the newest Python tensorflow[and-cuda] installs on
        ("2.7", "gpu", "tf2.7-py3.8-gpu"),  # Python 3.8 from apt on the official CUDA image
        ("2.2", "gpu", "tf2.2-py3.8-gpu"),  # the same where the image's own Python is 3.6
    ],
)
def test_auto_python_is_the_newest_the_cell_can_use(tf: str, device: str, env_id: str) -> None:
    environments, skipped = _plan(tf=tf, device=[device])
    assert (list(environments), skipped) == ([env_id], {})


def test_auto_and_an_explicit_python_are_one_cell_when_they_agree() -> None:
    environments, _ = _plan(tf="2.15", python="auto,3.11,3.10")
    assert list(environments) == ["tf2.15-py3.10-cpu", "tf2.15-py3.11-cpu"]


def test_legacy_keras_exists_from_tf_2_16() -> None:
    environments, skipped = _plan(tf="2.15,2.16", keras="default,legacy")
    assert skipped == {
        "tf2.15-py3.11-cpu-tfkeras": "the legacy Keras axis exists for TF >= 2.16 only"
    }
    legacy = environments["tf2.16-py3.12-cpu-tfkeras"]
    assert legacy.packages[:3] == ("tensorflow-cpu==2.16.2", "keras>=3.1,<3.5", "tf-keras~=2.16.0")
    assert legacy.env_vars == (("TF_USE_LEGACY_KERAS", "1"),)
    assert "tf-keras~=2.16.0" not in environments["tf2.16-py3.12-cpu"].packages


def test_new_tf_on_gpu_installs_and_cuda_on_the_python_base_image() -> None:
    environments, _ = _plan(tf="2.16", device=["gpu"])
    env = environments["tf2.16-py3.12-gpu"]
    assert (env.packages[0], env.base_image, env.template) == (
        "tensorflow[and-cuda]==2.16.2",
        "python:3.12-slim-bookworm",
        "gpu.Dockerfile.j2",
    )


def test_and_cuda_cells_that_cannot_install_are_skipped_with_the_cause() -> None:
    _, skipped = _plan(tf="2.14", python="3.11", device=["gpu"])
    assert skipped == {
        "tf2.14-py3.11-gpu": "tensorflow[and-cuda]==2.14.1 cannot install on Python 3.11 "
        "(tensorrt 8.5.3.1 has no 3.11 build)"
    }
    _, skipped = _plan(tf="2.15.0", device=["gpu"])
    assert skipped["tf2.15-py3.11-gpu"].startswith("tensorflow[and-cuda]==2.15.0 cannot install")
    assert skipped["tf2.15-py3.11-gpu"].endswith("use 2.15 or 2.15.1")


def test_keras_is_lowered_on_a_python_the_pinned_keras_does_not_support() -> None:
    environments, _ = _plan(python="3.10")
    assert environments["tf2.21-py3.10-cpu"].packages[1] == "keras~=3.12.0"


def test_a_python_without_a_base_image_is_skipped_with_the_key_to_set(in_tmp: Path) -> None:
    # a site's base_images replaces the built-in map: Pythons it leaves out have no image
    (in_tmp / "site.yaml").write_text('base_images: {"3.11": "registry.local:5000/py:3.11"}\n')
    environments, skipped = expand(load_config(Path("site.yaml"), {"tf": "2.15,2.21"}))
    assert [(env.id, env.base_image) for env in environments] == [
        ("tf2.15-py3.11-cpu", "registry.local:5000/py:3.11")
    ]
    assert [(cell.id, cell.reason) for cell in skipped] == [
        (
            "tf2.21-py3.13-cpu",
            'no base image configured for Python 3.13 (set base_images."3.13" in matrix.yaml)',
        )
    ]


def test_only_and_skip_filter_cells_that_could_run_and_say_so() -> None:
    environments, skipped = _plan(tf="2.2,2.3", device=["cpu", "gpu"], skip="tf2.2-*-gpu")
    assert list(environments) == ["tf2.2-py3.8-cpu", "tf2.3-py3.8-cpu", "tf2.3-py3.8-gpu"]
    assert skipped == {"tf2.2-py3.8-gpu": "filtered out by --skip 'tf2.2-*-gpu'"}

    environments, skipped = _plan(tf="2.2,2.21", python="3.8,3.13", only="*-py3.13-*")
    assert list(environments) == ["tf2.21-py3.13-cpu"]
    assert skipped["tf2.21-py3.8-cpu"].startswith("TensorFlow 2.21 has wheels")  # not a filter
    assert skipped["tf2.2-py3.8-cpu"] == "filtered out by --only '*-py3.13-*'"


def test_cells_come_in_tf_python_device_order_numerically() -> None:
    environments, skipped = expand(
        load_config(None, {"tf": "2.16,2.9", "python": "3.12,3.9", "device": ["gpu", "cpu"]})
    )
    assert [env.id for env in environments] == [
        "tf2.9-py3.9-cpu",
        "tf2.16-py3.9-cpu",
        "tf2.16-py3.9-gpu",
        "tf2.16-py3.12-cpu",
        "tf2.16-py3.12-gpu",
    ]
    assert [cell.id for cell in skipped] == [
        "tf2.9-py3.9-gpu",
        "tf2.9-py3.12-cpu",
        "tf2.9-py3.12-gpu",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"tf": "2.15; rm -rf /"},
            "--tf: invalid TensorFlow version '2.15; rm -rf /'; write a minor such as 2.21 "
            "or a release such as 2.21.0",
        ),
        (
            {"python": "3.11 && curl x"},
            "--py: invalid Python version '3.11 && curl x'; write 3.X (e.g. 3.11) or auto",
        ),
        (
            {"tf": "2.15.0,2.15.1"},
            "--tf: 2.15.0 and 2.15.1 are the same minor; environment ids (tf2.15-…) name one "
            "release per minor",
        ),
        ({"device": ["tpu"]}, "--device: must be 'cpu' or 'gpu' (got 'tpu')"),
    ],
)
def test_unsafe_or_impossible_axis_values_are_one_line_errors(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tf: [2.10]\n", "matrix.yaml: tf: write versions in quotes, e.g. '2.1': YAML reads"),
        ('python: ["3.11\\n"]\n', "matrix.yaml: python[0]: '3.11\\n' holds a control character"),
        (
            'base_images: {"3.11": "python:3.11\\nRUN curl evil"}\n',
            "matrix.yaml: base_images.3.11: 'python:3.11\\nRUN curl evil' holds a control "
            "character",
        ),
        (
            'base_images: {"3.11": "python:3.11 RUN curl evil"}\n',
            "matrix.yaml: base_images: 3.11: invalid image 'python:3.11 RUN curl evil'",
        ),
        (
            "backend: kubernetes\n",
            "matrix.yaml: backend: must be 'local', 'docker', 'venv', 'ray' or 'auto'",
        ),
    ],
)
def test_axis_errors_in_a_file_name_the_file_and_key(in_tmp: Path, text: str, message: str) -> None:
    (in_tmp / "matrix.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(Path("matrix.yaml"))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_injection_like_version_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "matrix", "plan", "--tf", "2.15; rm -rf /"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: --tf: invalid TensorFlow version '2.15; rm -rf /'; write a minor such as 2.21 "
        "or a release such as 2.21.0\n"
    )


def test_unknown_tf_minor_lists_the_supported_ones(in_tmp: Path) -> None:
    result = _cli("--tf", "2.1")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --tf: unknown TensorFlow minor '2.1'; choose from "
        + ", ".join(f"2.{n}" for n in range(2, 22))
        + "\n"
    )


def test_run_takes_the_same_axis_flags(in_tmp: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--tf", "2.1", "--gpu"])
    assert (result.exit_code, result.stderr.split(";")[0]) == (
        2,
        "error: --tf: unknown TensorFlow minor '2.1'",
    )
    assert not (in_tmp / "results").exists()


def test_plan_json_lists_environments_and_skipped_cells_with_reasons(in_tmp: Path) -> None:
    result = _cli("--json", "--tf", "2.2,2.14", "--py", "3.8,3.11", "--both")
    assert result.exit_code == 0
    plan = json.loads(result.stdout)  # stdout is the JSON document and nothing else
    assert [env["id"] for env in plan["environments"]] == [
        "tf2.2-py3.8-cpu",
        "tf2.2-py3.8-gpu",
        "tf2.14-py3.11-cpu",
    ]
    assert plan["environments"][0] == {
        "id": "tf2.2-py3.8-cpu",
        "tf": "2.2.3",
        "python": "3.8",
        "device": "cpu",
        "keras": "default",
        "base_image": "python:3.8-slim",
        "packages": [
            "tensorflow-cpu==2.2.3",
            "numpy<1.19",
            "h5py<2.11",
            "protobuf<3.20",
            "tensorboard<2.3",
        ],
    }
    assert plan["environments"][1]["base_image"] == "tensorflow/tensorflow:2.2.2-gpu"
    reasons = {cell["id"]: cell["reason"] for cell in plan["skipped"]}
    assert reasons == {
        "tf2.2-py3.11-cpu": "TensorFlow 2.2 has wheels for Python 3.6–3.8 only",
        "tf2.2-py3.11-gpu": "GPU cells of TF < 2.14 run Python 3.8 on the official CUDA image "
        "tensorflow/tensorflow:2.2.2-gpu",
        "tf2.14-py3.8-cpu": "TensorFlow 2.14 has wheels for Python 3.9–3.11 only",
        "tf2.14-py3.8-gpu": "TensorFlow 2.14 has wheels for Python 3.9–3.11 only",
        "tf2.14-py3.11-gpu": "tensorflow[and-cuda]==2.14.1 cannot install on Python 3.11 "
        "(tensorrt 8.5.3.1 has no 3.11 build)",
    }


def test_plan_table_shows_ids_images_and_reasons_verbatim(in_tmp: Path) -> None:
    result = _cli("--tf", "2.14", "--py", "3.11", "--gpu", "--cpu")
    assert result.exit_code == 0
    assert "1 environment(s) selected" in result.stdout
    assert "python:3.11-slim-bookworm" in result.stdout
    assert "1 cell(s) skipped" in result.stdout
    assert "tensorflow[and-cuda]==2.14.1" in result.stdout  # not swallowed as rich markup
