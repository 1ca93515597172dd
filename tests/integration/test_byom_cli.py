"""Bring your own model, orchestrator side: the matrix entry, the flags, the harness options.

Fast unit tests first: a model entry in matrix.yaml (`{model, code, inputs, dims}`) and the
`--code` / `--inputs` flags, with the one-line errors a user meets; the `--model-options` JSON
the run writes for the harness; the read-only mounts a container gets. Then one real run per
backend this machine can afford, each with a tiny model holding a custom layer and the module
that defines it: local (this interpreter's TensorFlow) and docker (the image the Docker tests
build; the container must not be able to write the user's files it is given).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matrix.cli import app
from matrix.errors import ConfigError
from matrix.execute.backends.docker import (
    USER_FILES_MOUNT,
    prepare_host_files,
    run_request,
    start_container,
)
from matrix.execute.matrix_run import MODEL_OPTIONS, MatrixRun
from matrix.plan.config import ModelEntry, load_config
from tests.integration.docker_matrix import MATRIX_YAML, matrix, records
from tests.integration.user_code import SCALE_LAYER

LAYERS = SCALE_LAYER  # the user's code: a custom layer registered as Keras documents

# Run in a fresh interpreter (TensorFlow stays out of pytest): the model saved with that layer.
MAKE_MODEL = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("layers", sys.argv[1])
layers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(layers)
import keras
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), layers.Scale(3.0)])
model.save(sys.argv[2])
"""

ONE_TRIAL = (
    "--formats",
    "keras",
    "--cache",
    "warm",
    "--repeats",
    "1",
    "--warmup",
    "0",
    "--inference-runs",
    "2",
    "--no-report",
)


def _user_files(folder: Path) -> tuple[Path, Path, Path]:
    """Placeholder model, code and inputs files, for the tests that never load them."""
    folder.mkdir(parents=True, exist_ok=True)
    model, code, inputs = folder / "mine.keras", folder / "layers.py", folder / "real.npz"
    for path in (model, code, inputs):
        path.write_bytes(b"")
    return model, code, inputs


def _error(config: Path, **overrides: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(config, overrides)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 2
    return str(caught.value)


# ---- the matrix entry and the flags ------------------------------------------------------------


def test_an_entry_resolves_its_paths_against_the_matrix_files_folder(in_tmp: Path) -> None:
    _user_files(in_tmp / "mine")
    (in_tmp / "mine" / "matrix.yaml").write_text(
        "models:\n  - dense-10k\n"
        "  - {model: mine.keras, code: layers.py, inputs: real.npz, dims: {tokens: 64}}\n"
    )
    config = load_config(Path("mine/matrix.yaml"))
    name, entry = config.models
    assert name == "dense-10k"  # a plain name stays a string, as before
    assert entry == ModelEntry(
        model="mine/mine.keras",
        code=(in_tmp / "mine/layers.py",),
        inputs=in_tmp / "mine/real.npz",
        dims={"tokens": 64},
    )
    assert config.model_names == ("dense-10k", "mine/mine.keras")


def test_a_plain_model_path_in_a_file_elsewhere_is_that_files_too(in_tmp: Path) -> None:
    _user_files(in_tmp / "mine")
    (in_tmp / "mine" / "matrix.yaml").write_text("models: [mine.keras, MobileNetV2]\n")
    assert load_config(Path("mine/matrix.yaml")).models == ("mine/mine.keras", "MobileNetV2")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "{model: mine.keras, cod: layers.py}",
            "models[0].cod: unknown key (did you mean code?); "
            "valid keys are model, code, inputs, dims",
        ),
        (
            "{model: mine.keras, code: [nope.py]}",
            "models[0].code: nope.py: no such file; give the Python module that defines",
        ),
        ("{model: mine.keras, code: real.npz}", "models[0].code: real.npz: not a .py file"),
        ("{model: mine.keras, inputs: layers.py}", "models[0].inputs: layers.py: not a .npz file"),
        ("{code: layers.py}", "models[0].model: missing; give the model's name or path"),
        ("{model: mine.keras, dims: {tokens: 0}}", "models[0].dims.tokens: must be >= 1 (got 0)"),
        (
            "{model: mine.keras, dims: [64]}",
            "models[0].dims: must be a mapping of input name: size",
        ),
        ("{model: nope.keras}", "models[0].model: model file 'nope.keras' does not exist"),
    ],
)
def test_a_bad_entry_is_one_line_naming_the_field(in_tmp: Path, entry: str, message: str) -> None:
    _user_files(in_tmp)
    (in_tmp / "matrix.yaml").write_text(f"models: [{entry}]\n")
    assert _error(Path("matrix.yaml")).startswith(f"matrix.yaml: {message}")


def test_a_model_listed_twice_is_refused(in_tmp: Path) -> None:
    _user_files(in_tmp)
    (in_tmp / "matrix.yaml").write_text("models: [mine.keras, {model: mine.keras}]\n")
    assert _error(Path("matrix.yaml")) == (
        "matrix.yaml: models: model 'mine.keras' is listed twice; list it once"
    )


def test_the_flags_attach_code_and_inputs_to_every_model_file(in_tmp: Path) -> None:
    _user_files(in_tmp)
    (in_tmp / "more.py").write_text("")
    runner = CliRunner()
    bad = runner.invoke(
        app,
        [
            "run",
            "--models",
            "./mine.keras,dense-10k",
            "--code",
            "layers.py,more.py",
            "--code",
            "missing.py",
        ],
    )
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines()[-1] == (
        "error: --code: missing.py: no such file; give the Python module that defines the "
        "model's custom objects"
    )
    none = runner.invoke(app, ["run", "--models", "dense-10k", "--inputs", "real.npz"])
    assert (
        none.exit_code == 2
        and "error: --inputs: applies to model files given with --models" in none.output
    )
    wrong = runner.invoke(app, ["run", "--models", "./mine.keras", "--inputs", "layers.py"])
    assert wrong.exit_code == 2 and "error: --inputs: layers.py: not a .npz file" in wrong.output


# ---- what the harness is given -----------------------------------------------------------------


def _byom_run(tmp_path: Path) -> tuple[MatrixRun, Path, Path, Path]:
    model, code, inputs = _user_files(tmp_path / "user")
    config = load_config(
        None,
        {
            "results_dir": str(tmp_path / "results"),
            "models": [
                "dense-10k",
                {
                    "model": str(model),
                    "code": [str(code)],
                    "inputs": str(inputs),
                    "dims": {"tokens": 32},
                },
            ],
        },
    )
    return MatrixRun(config=config, run_id="byom"), model, code, inputs


def _options(run: MatrixRun, env_id: str, args: list[str]) -> tuple[str, dict]:
    """The --model-options path in `args`, and the JSON written in the environment's folder."""
    seen = args[args.index("--model-options") + 1]
    written = json.loads((run.env_dir(env_id) / MODEL_OPTIONS).read_text())
    return seen, written


def test_local_and_venv_get_host_paths_in_the_options_file(tmp_path: Path) -> None:
    run, model, code, inputs = _byom_run(tmp_path)
    args = run.harness_args("local-x")
    seen, written = _options(run, "local-x", args)
    assert seen == str((run.env_dir("local-x") / MODEL_OPTIONS).absolute())
    assert args[args.index("--models") + 1] == f"dense-10k,{model}"
    assert written == {
        str(model): {"code": [str(code)], "inputs": str(inputs), "dims": {"tokens": 32}}
    }


def test_without_user_files_there_is_no_options_file(tmp_path: Path) -> None:
    run = MatrixRun(
        config=load_config(None, {"results_dir": str(tmp_path), "models": "dense-10k"}),
        run_id="plain",
    )
    assert "--model-options" not in run.harness_args("local-x")
    assert not run.env_dir("local-x").exists()


def test_a_container_gets_every_user_file_read_only_at_the_paths_it_is_told(
    tmp_path: Path, cpu_env
) -> None:
    run, model, code, inputs = _byom_run(tmp_path)
    prepare_host_files(run, cpu_env.id)
    request = run_request(cpu_env, run, "image:tag")
    binds, command = request["host"]["binds"], request["command"]
    seen = {str(path): binds[str(path)]["bind"] for path in (model, code, inputs)}
    assert all(binds[path]["mode"] == "ro" for path in seen)
    assert all(bind.startswith(f"{USER_FILES_MOUNT}/") for bind in seen.values())
    assert seen[str(model)].endswith("/mine.keras")  # its records name it as outside Docker
    # Files of one host folder share one container folder (a module can import its siblings
    # given with it), and only the files given are mounted, never the folder itself.
    assert len({bind.rsplit("/", 1)[0] for bind in seen.values()}) == 1
    assert str(model.parent) not in binds
    assert command[command.index("--models") + 1] == f"dense-10k,{seen[str(model)]}"
    options_at, written = _options(run, cpu_env.id, command)
    assert written == {
        seen[str(model)]: {
            "code": [seen[str(code)]],
            "inputs": seen[str(inputs)],
            "dims": {"tokens": 32},
        }
    }
    env_dir = binds[str(run.env_dir(cpu_env.id).absolute())]
    assert env_dir["mode"] == "ro" and options_at == f"{env_dir['bind']}/{MODEL_OPTIONS}"


# ---- real runs: a custom layer with its code ---------------------------------------------------


def _custom_layer_model(folder: Path) -> None:
    (folder / "layers.py").write_text(LAYERS)
    made = subprocess.run(
        [sys.executable, "-c", MAKE_MODEL, str(folder / "layers.py"), str(folder / "scaled.keras")],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr[-2000:]


def _one_ok_trial(run_dir: Path, env_id: str, proc: subprocess.CompletedProcess) -> dict:
    got = records(run_dir, env_id)
    trials = [r for r in got if r["kind"] == "trial" and r["model"] == "scaled.keras"]
    assert [t["status"] for t in trials] == ["ok"], proc.stdout[-3000:] + proc.stderr[-3000:]
    assert trials[0]["user_code_import_s"] >= 0  # the import is timed apart from the load
    return trials[0]


def test_a_custom_layer_model_runs_locally_with_its_code(tmp_path: Path) -> None:
    _custom_layer_model(tmp_path)
    proc = matrix(
        tmp_path,
        "run",
        "--backend",
        "local",
        "--models",
        "./scaled.keras",
        "--code",
        "./layers.py",
        *ONE_TRIAL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = [
        p for p in (tmp_path / "results").iterdir() if p.is_dir() and not p.name.startswith(".")
    ]
    (env_id,) = [p.stem for p in run_dir.glob("*.jsonl")]
    _one_ok_trial(run_dir, env_id, proc)


def test_a_custom_layer_model_runs_in_a_venv_with_its_code(tmp_path: Path, venv_root: Path) -> None:
    """The venv backend's harness gets the host paths, as local's does; the code module is
    imported from where it is, never installed into the measured environment."""
    _custom_layer_model(tmp_path)
    proc = matrix(
        tmp_path,
        "run",
        "--backend",
        "venv",
        "--tf",
        "2.21",
        "--py",
        "3.11",
        "--build-dir",
        str(venv_root),
        "--models",
        "./scaled.keras",
        "--code",
        "./layers.py",
        *ONE_TRIAL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = [
        p for p in (tmp_path / "results").iterdir() if p.is_dir() and not p.name.startswith(".")
    ]
    _one_ok_trial(run_dir, "tf2.21-py3.11-cpu", proc)
    (outcome,) = json.loads((run_dir / "manifest.json").read_text())["outcomes"]
    site = next(Path(outcome["image"]).glob("lib/python*/site-packages"))
    assert not list(site.glob("layers*")), "the user's module was installed into the venv"


def test_a_custom_layer_model_runs_in_docker_and_its_files_stay_read_only(
    tmp_path: Path, cpu_env, cpu_image, docker_engine, image_build_root: Path
) -> None:
    _custom_layer_model(tmp_path)
    digests = {
        name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        for name in ("scaled.keras", "layers.py")
    }
    (tmp_path / "matrix.yaml").write_text(
        MATRIX_YAML + "models: [{model: scaled.keras, code: [layers.py]}]\n"
    )
    proc = matrix(
        tmp_path, "run", "--backend", "docker", "--build-dir", str(image_build_root), *ONE_TRIAL
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = [
        p for p in (tmp_path / "results").iterdir() if p.is_dir() and not p.name.startswith(".")
    ]
    _one_ok_trial(run_dir, cpu_env.id, proc)
    # The same request, its harness swapped for attempts to write the files it was given.
    config = load_config(tmp_path / "matrix.yaml", {"results_dir": str(tmp_path / "probe")})
    run = MatrixRun(config=config, run_id="probe")
    prepare_host_files(run, cpu_env.id)
    request = run_request(cpu_env, run, cpu_image.tag)
    targets = [request["host"]["binds"][str(tmp_path / name)]["bind"] for name in digests]
    request["command"] = [
        "-c",
        f"""
import errno
for path in {targets!r}:
    try:
        open(path, 'a').close()
        print(path, 'WRITABLE')
    except OSError as exc:
        print(path, errno.errorcode[exc.errno])
""",
    ]
    outputs = {}
    # As the harness's user, then as root, which the run never is: the mount itself refuses.
    for user in (request["user"], "0:0"):
        container = start_container(
            docker_engine, {**request, "user": user}, entrypoint=["python3"]
        )
        try:
            assert container.wait(timeout=120)["StatusCode"] == 0
            outputs[user] = container.logs().decode()
        finally:
            container.remove(force=True)
    docker_engine.volumes.get(request["name"]).remove(force=True)
    assert "WRITABLE" not in "".join(outputs.values()), outputs
    assert outputs["0:0"].count("EROFS") == 2, outputs
    assert digests == {
        name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in digests
    }
