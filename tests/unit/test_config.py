"""matrix.yaml loading and validation: defaults, layering, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.catalog import CACHE_MODES, FORMATS
from matrix.errors import ConfigError, ExitCode
from matrix.plan.config import MatrixConfig, find_config_file, load_config

REPO = Path(__file__).resolve().parents[2]


def _error(tmp: Path, text: str, **overrides: object) -> str:
    """The one-line message for a matrix file with `text` (and flag overrides)."""
    path = tmp / "matrix.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(Path("matrix.yaml"), overrides)
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.exit_code == ExitCode.CONFIG_ERROR == 2
    return message


def test_builtin_default_is_the_quick_matrix(in_tmp: Path) -> None:
    config = load_config(find_config_file(None))
    assert config == MatrixConfig(
        models=("MobileNetV2",),
        formats=FORMATS,
        cache=("cold", "warm"),
        repeats=5,
        max_repeats=20,
        precision=0.1,
        warmup=1,
        inference_runs=10,
        process="fresh",
        trial_process="fresh",
        fresh_artifacts=False,
        seed=1234,
        weights="none",
        results_dir=Path("results"),
    )


def test_repository_matrix_yaml_is_the_builtin_default() -> None:
    root = REPO / "matrix.yaml"
    builtin = REPO / "matrix" / "plan" / "default.yaml"
    # Same keys and values, spelled out in both (the root file documents every key) ...
    assert yaml.safe_load(root.read_text()) == yaml.safe_load(builtin.read_text())
    assert set(yaml.safe_load(root.read_text())) == set(MatrixConfig.model_fields)
    # ... and the same validated matrix.
    assert load_config(root) == load_config(None)


def test_local_matrix_yaml_is_found_in_the_current_folder(in_tmp: Path) -> None:
    assert find_config_file(None) is None
    (in_tmp / "matrix.yaml").write_text("repeats: 7\n")
    found = find_config_file(None)
    assert found == Path("matrix.yaml")
    config = load_config(found)
    assert config.repeats == 7
    assert config.models == ("MobileNetV2",)  # keys left out keep the built-in value


def test_explicit_config_that_does_not_exist_is_named(in_tmp: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--config: nope\.yaml: no such file$"):
        find_config_file(Path("nope.yaml"))


def test_flag_overrides_beat_the_file(in_tmp: Path) -> None:
    (in_tmp / "m.yaml").write_text("repeats: 7\nformats: [h5]\nprocess: reused\n")
    config = load_config(Path("m.yaml"), {"repeats": 2, "formats": "tflite,keras"})
    assert config.repeats == 2
    assert config.formats == ("tflite", "keras")
    assert config.process == "reused"


def test_a_bad_file_value_is_hidden_by_a_good_flag(in_tmp: Path) -> None:
    (in_tmp / "m.yaml").write_text("repeats: 0\n")
    assert load_config(Path("m.yaml"), {"repeats": 1}).repeats == 1


def test_lists_accept_commas_and_all(in_tmp: Path) -> None:
    config = load_config(None, {"models": "MobileNetV2, dense-10m", "cache": "all"})
    assert config.models == ("MobileNetV2", "dense-10m")
    assert config.cache == CACHE_MODES


def test_repeats_zero_names_file_key_and_value(in_tmp: Path) -> None:
    assert _error(in_tmp, "repeats: 0\n") == "matrix.yaml: repeats: must be >= 1 (got 0)"


def test_repeats_zero_from_a_flag_names_the_flag(in_tmp: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"repeats": 0})
    assert str(caught.value) == "--repeats: must be >= 1 (got 0)"


def test_unknown_key_is_named_with_a_suggestion(in_tmp: Path) -> None:
    message = _error(in_tmp, "repetas: 3\n")
    assert message.startswith("matrix.yaml: repetas: unknown key (did you mean repeats?)")
    assert "inference_runs" in message  # lists the valid keys


def test_unknown_format_lists_every_format(in_tmp: Path) -> None:
    message = _error(in_tmp, "formats: [h5, h6]\n")
    assert message.startswith("matrix.yaml: formats: unknown format 'h6'; choose from ")
    assert all(name in message for name in FORMATS)


def test_unknown_cache_mode_lists_the_modes(in_tmp: Path) -> None:
    message = _error(in_tmp, "cache: hot\n")
    assert (
        message
        == "matrix.yaml: cache: unknown cache mode 'hot'; choose from cold, cold-model, warm"
    )


def test_unknown_model_suggests_close_names(in_tmp: Path) -> None:
    message = _error(in_tmp, "models: [MobileNetV3]\n")
    assert "unknown model 'MobileNetV3'" in message
    assert "MobileNetV3Small" in message and "dense-10m" in message


def test_missing_model_file_names_the_path(in_tmp: Path) -> None:
    message = _error(in_tmp, "models: [models/mine.keras]\n")
    assert message.startswith("matrix.yaml: models: model file 'models/mine.keras' does not exist")


def test_existing_model_file_is_accepted(in_tmp: Path) -> None:
    (in_tmp / "mine.h5").write_bytes(b"")
    assert load_config(None, {"models": "mine.h5"}).models == ("mine.h5",)


def test_empty_list_names_the_choices(in_tmp: Path) -> None:
    message = _error(in_tmp, "formats: []\n")
    assert message.startswith("matrix.yaml: formats: name at least one of all, savedmodel")


def test_choice_fields_name_the_allowed_values(in_tmp: Path) -> None:
    assert _error(in_tmp, "process: forked\n") == (
        "matrix.yaml: process: must be 'fresh', 'reused' or 'both' (got 'forked')"
    )
    assert _error(in_tmp, "weights: random\n") == (
        "matrix.yaml: weights: must be 'none' or 'imagenet' (got 'random')"
    )


@pytest.mark.parametrize("value", ["'3'", "true", "2.5"])
def test_counts_must_be_whole_numbers(in_tmp: Path, value: str) -> None:
    assert _error(in_tmp, f"repeats: {value}\n").startswith(
        "matrix.yaml: repeats: must be a whole number"
    )


def test_a_bad_list_item_is_located_by_index(in_tmp: Path) -> None:
    assert _error(in_tmp, "formats: [h5, 3]\n") == "matrix.yaml: formats[1]: must be a name (got 3)"


def test_bad_yaml_reports_file_and_line(in_tmp: Path) -> None:
    message = _error(in_tmp, "repeats: 3\nformats: [h5\nwarmup: 1\n")
    assert message.startswith("matrix.yaml:3: invalid YAML: ")


def test_a_file_that_is_not_a_mapping_is_rejected(in_tmp: Path) -> None:
    assert _error(in_tmp, "- h5\n- tflite\n").startswith(
        "matrix.yaml: expected a mapping of keys such as models"
    )


def test_an_empty_file_means_the_default(in_tmp: Path) -> None:
    (in_tmp / "matrix.yaml").write_text("# nothing changed\n")
    assert load_config(Path("matrix.yaml")) == load_config(None)
