"""The matrix to measure: which models, formats and cache modes, and how many trials of each.

Three layers, later ones winning: the built-in default (matrix/plan/default.yaml), one YAML file
(`--config FILE`, else ./matrix.yaml), then flags; merged as plain dicts and validated once, so a
flag is checked like the same key in a file. Names are checked against `harness.catalog` (the
harness's own list), the environment axes against compat.yaml, versions against strict patterns.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from harness.catalog import CACHE_MODES, FORMATS, CatalogError, check_choices, parse_model
from harness.precision import MIN_REPEATS
from matrix.errors import ConfigError
from matrix.plan.compat import PYTHON_VERSION, SAFE_LOADER, load_table, minor_of
from matrix.plan.inputs import CONTROL, refuse_control

CONFIG_FILE_NAME = "matrix.yaml"
BUILTIN_LABEL = "built-in default"
_ALL = {"formats": FORMATS, "cache": CACHE_MODES}  # keys where the word `all` means every name
_LISTS = ("models", "formats", "cache", "tf", "python", "device", "keras", "only", "skip")
_VERSIONS = ("tf", "python")  # YAML reads an unquoted 2.10 as the number 2.1: refuse numbers
_FLAGS = {"python": "py"}  # a field whose flag is not --<field-name>
# What a FROM line may contain: registry[:port]/name[:tag][@digest], nothing a shell would parse.
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
# A Ray node label `key=value` (keys may carry a prefix/, as ray.io/accelerator-type) or a
# custom resource's name: `--ray-nodes`.
_RAY_NODES = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,252}(=[A-Za-z0-9._-]{0,63})?")
# A registry as Docker names one: HOST[:PORT], then an optional path prefix of lowercase parts.
# No scheme and no `user:password@`: the engine's own `docker login` holds any credentials.
_REGISTRY = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*")
# The most trials a cell may ask for, measured or warm-up: 1000 fresh processes of even the
# smallest model take about an hour a cell, and a typo such as `repeats: 50000` would keep a
# machine busy for weeks before anyone looked.
TRIALS_LIMIT = 1000


_GLOB = re.compile(r"[A-Za-z0-9_.*?\[\]-]+")  # one glob over environment ids


def _builtin(key: str, **constraints: Any) -> Any:
    """A field whose default is default.yaml's value, so code can build a MatrixConfig without
    naming every axis while the default is still written in one place (and validated)."""
    return Field(
        default_factory=lambda: _builtin_layer()[key], validate_default=True, **constraints
    )


class ModelEntry(BaseModel):
    """A model with what it needs from its user, for `models: [{model: ..., code: [...]}]`.

    `code`: the Python modules defining its custom layers or objects, imported by the harness
    before each save and load; `inputs`: an .npz of real inputs (by input name, or arr_0, arr_1
    ... in order) used instead of synthetic ones; `dims`: sizes for its dynamic dimensions, by
    input name. Files must exist here: the harness is given them (matrix.execute.matrix_run),
    never a guess.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    code: tuple[Path, ...] = ()
    inputs: Optional[Path] = None  # noqa: UP045 (pydantic evaluates it, on Python 3.9 too)
    dims: dict[str, Annotated[int, Field(ge=1, strict=True)]] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        return parse_model(name).name

    @field_validator("code", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        """`code: layers.py` is one module, `code: a.py,b.py` two, as a flag would give them."""
        return _csv(value) if isinstance(value, str) else value

    @field_validator("code")
    @classmethod
    def _python_modules(cls, paths: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(
            _user_file(path, ".py", "the Python module that defines the model's custom objects")
            for path in paths
        )

    @field_validator("inputs")
    @classmethod
    def _npz(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        return _user_file(path, ".npz", "an .npz of arrays by input name (numpy.savez)")


# A model in `models`: its name (or path) as a string, or a mapping with its user's files.
ModelItem = Annotated[
    Union[Annotated[str, Tag("name")], Annotated[ModelEntry, Tag("entry")]],
    Discriminator(lambda item: "entry" if isinstance(item, (dict, ModelEntry)) else "name"),
]


def _user_file(path: Path, suffix: str, what: str) -> Path:
    """`path` as an absolute path, if it is an existing `suffix` file; else what to give."""
    path = path.expanduser()
    if path.suffix != suffix:
        raise ValueError(f"{path}: not a {suffix} file; give {what}")
    if not path.is_file():
        raise ValueError(f"{path}: no such file; give {what}")
    return path.absolute()


class MatrixConfig(BaseModel):
    """One validated matrix. Defaults live in default.yaml only (the axes read theirs from it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[ModelItem, ...] = Field(min_length=1)
    formats: tuple[str, ...] = Field(min_length=1)
    cache: tuple[str, ...] = Field(min_length=1)
    # None (`auto`): each cell until its median is known within `precision`, or `max_repeats`.
    repeats: Optional[int] = Field(ge=1, le=TRIALS_LIMIT, strict=True)  # noqa: UP045
    max_repeats: int = Field(ge=MIN_REPEATS, le=TRIALS_LIMIT, strict=True)
    precision: float = Field(gt=0, lt=1)
    warmup: int = Field(ge=0, le=TRIALS_LIMIT, strict=True)
    inference_runs: int = Field(ge=1, strict=True)
    process: Literal["fresh", "reused", "both"]
    trial_process: Literal["forked", "fresh"]
    fresh_artifacts: bool
    seed: int = Field(ge=0, strict=True)
    weights: Literal["none", "imagenet"]
    results_dir: Path
    # The environment axes: one environment per tf x python x device x keras that can exist.
    tf: tuple[str, ...] = _builtin("tf", min_length=1)
    python: tuple[str, ...] = _builtin("python", min_length=1)
    device: tuple[Literal["cpu", "gpu"], ...] = _builtin("device", min_length=1)
    keras: tuple[Literal["default", "legacy"], ...] = _builtin("keras", min_length=1)
    base_images: dict[str, str] = _builtin("base_images")
    only: tuple[str, ...] = _builtin("only")
    skip: tuple[str, ...] = _builtin("skip")
    backend: Literal["local", "docker", "venv", "ray", "auto"] = _builtin("backend")
    isolation: Literal["process", "container"] = _builtin("isolation")
    # Loader environments (globs over ids) that load every other environment's artifacts; "" off.
    cross_load: str = _builtin("cross_load")
    # The ray backend's (docs/ray.md): the cluster to join, which of its nodes measure (a node
    # label KEY=VALUE or a custom resource's name; "" all), and how a node makes environments.
    address: str = _builtin("address", min_length=1)
    ray_nodes: str = _builtin("ray_nodes")
    node_backend: Literal["auto", "docker", "venv"] = _builtin("node_backend")
    # Where the driver pushes each image for the docker nodes to pull ("": each node builds).
    registry: str = _builtin("registry")

    @field_validator("repeats", mode="before")
    @classmethod
    def _auto_repeats(cls, value: Any) -> Any:
        """`auto` is None (a number must be one: `repeats: '3'` is refused like any count)."""
        return None if value == "auto" else value

    @field_validator(*_LISTS, mode="before")
    @classmethod
    def _split_lists(cls, value: Any, info: ValidationInfo) -> Any:
        """Accept `a,b` as well as a YAML list, so the same text works in a file and on a flag."""
        if info.field_name in _VERSIONS:
            _refuse_numbers(value if isinstance(value, (list, tuple)) else [value])
        if isinstance(value, str):
            value = _csv(value)
        if value == ["all"] and info.field_name in _ALL:
            return _ALL[info.field_name]
        return value

    @field_validator("tf")
    @classmethod
    def _known_tf(cls, specs: tuple[str, ...]) -> tuple[str, ...]:
        """Every version must exist in compat.yaml; one per minor, as ids name only the minor."""
        table = load_table()
        seen: dict[str, str] = {}
        for spec in specs:
            table.resolve(spec)  # raises the one-line error naming the choices
            other = seen.setdefault(minor_of(spec), spec)
            if other != spec:
                raise ValueError(
                    f"{other} and {spec} are the same minor; environment ids "
                    f"(tf{minor_of(spec)}-…) name one release per minor"
                )
        return tuple(dict.fromkeys(specs))  # `2.15,2.15` is one cell, not two

    @field_validator("python")
    @classmethod
    def _python_versions(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            _check_python(value, allow_auto=True)
        return values

    @field_validator("base_images", mode="before")
    @classmethod
    def _base_images(cls, images: Any) -> Any:
        if isinstance(images, dict):
            _refuse_numbers(list(images))
            for python, image in images.items():
                _check_python(python, allow_auto=False)
                if not isinstance(image, str) or not _IMAGE.fullmatch(image):
                    raise ValueError(
                        f"{python}: invalid image {image!r}; use a name like "
                        f"registry.example:5000/python:3.11-slim (letters, digits, . _ / : @ -)"
                    )
        return images

    @field_validator("models")
    @classmethod
    def _known_models(cls, items: tuple[str | ModelEntry, ...]) -> tuple[str | ModelEntry, ...]:
        items = tuple(parse_model(i).name if isinstance(i, str) else i for i in items)
        names = [i if isinstance(i, str) else i.model for i in items]
        twice = next((name for name in names if names.count(name) > 1), None)
        if twice is not None:
            raise ValueError(f"model {twice!r} is listed twice; list it once")
        return items

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every model's name (or path) as the harness gets it, entries included."""
        return tuple(i if isinstance(i, str) else i.model for i in self.models)

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_choices("format", list(names), FORMATS))

    @field_validator("cache")
    @classmethod
    def _known_cache_modes(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_choices("cache mode", list(names), CACHE_MODES))

    @field_validator("results_dir")
    @classmethod
    def _expand_home(cls, path: Path) -> Path:
        return path.expanduser()

    @field_validator("cross_load")
    @classmethod
    def _loader_globs(cls, value: str) -> str:
        if value and not all(_GLOB.fullmatch(part) for part in _csv(value)):
            raise ValueError(
                f"invalid loader selection {value!r}; give comma-separated globs over "
                "environment ids, e.g. 'tf2.21-*' ('*': every environment)"
            )
        return value

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        if value and not _REGISTRY.fullmatch(value):
            raise ValueError(
                f"invalid registry {value!r}; give HOST:PORT or HOST:PORT/prefix, without a "
                "scheme or credentials (`docker login HOST:PORT` holds those)"
            )
        return value

    @field_validator("ray_nodes")
    @classmethod
    def _node_selector(cls, value: str) -> str:
        if value and not _RAY_NODES.fullmatch(value):
            raise ValueError(
                f"invalid node selector {value!r}; give a node label as KEY=VALUE "
                "(ray start --labels) or the name of a resource the nodes declare"
            )
        return value


def repeats_flag(text: str) -> int | str:
    """`--repeats` as the config takes it: a count from its digits, any other word as given
    (`auto`, or a typo the config then refuses by name)."""
    return int(text) if text.isascii() and text.isdecimal() else text


def _csv(text: str) -> list[str]:
    """`a, b` → [a, b]: the comma-separated form every list takes on a flag."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _refuse_numbers(values: Sequence[Any]) -> None:
    for value in values:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(
                f"write versions in quotes, e.g. '{value}': YAML reads an unquoted 2.10 "
                f"as the number 2.1"
            )


def _check_python(value: Any, allow_auto: bool) -> None:
    valid = isinstance(value, str) and (
        PYTHON_VERSION.fullmatch(value) is not None or (allow_auto and value == "auto")
    )
    if not valid:
        choices = "3.X (e.g. 3.11) or auto" if allow_auto else "3.X (e.g. 3.11)"
        raise ValueError(f"invalid Python version {value!r}; write {choices}")


def find_config_file(explicit: Path | None) -> Path | None:
    """`--config FILE` if given, else ./matrix.yaml if present, else None (the built-in)."""
    if explicit is not None:
        refuse_control("--config", explicit)
        if not explicit.is_file():
            raise ConfigError(f"--config: {explicit}: no such file")
        return explicit
    local = Path(CONFIG_FILE_NAME)
    return local if local.is_file() else None


def load_config(
    config_file: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> MatrixConfig:
    """Merge built-in default, file and flag overrides (field name → value), then validate.

    A key replaces the one below it whole, maps included: a file that lists base_images lists
    every image the site has, and a Python left out is skipped rather than pulled from a registry.
    """
    layers = [(BUILTIN_LABEL, _builtin_layer())]
    if config_file is not None:
        data = _read_yaml(str(config_file), _read_text(config_file))
        layers.append((str(config_file), _rebased(data, config_file.parent)))
    layers.append(("", dict(overrides or {})))  # "" marks the command line
    merged: dict[Any, Any] = {}
    for _, data in layers:
        merged.update(data)
    _refuse_control(merged, layers)
    try:
        config = MatrixConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc.errors()[0], layers)) from None
    if config.ray_nodes and config.backend != "ray":
        raise ConfigError(
            f"{_where('ray_nodes', layers)}: only the ray backend has nodes to choose; "
            "use --backend ray, or drop --ray-nodes"
        )
    if config.registry and (config.backend != "ray" or config.node_backend != "docker"):
        raise ConfigError(
            f"{_where('registry', layers)}: only --backend ray with --node-backend docker pulls "
            "images from a registry (the driver builds and pushes them); add both, or drop it"
        )
    if config.isolation == "container" and config.backend in ("local", "venv"):
        raise ConfigError(
            f"{_where('isolation', layers)}: container needs the docker backend "
            "(a fresh container per trial); use --backend docker, or "
            f"--isolation process with --backend {config.backend}"
        )
    return config


def _refuse_control(merged: dict[Any, Any], layers: list[tuple[str, dict[Any, Any]]]) -> None:
    """ConfigError naming the key if any key or text value holds a control character.

    Values end up in files: crontab lines, systemd units, workflows, Dockerfiles. There a
    newline starts a new line whatever the quoting, so such a value is refused, not escaped.
    """
    for key, value in merged.items():
        if CONTROL.search(str(key)):
            source = next(label for label, data in reversed(layers) if key in data)
            refuse_control(f"{source or 'command line'}: key", key)
        for loc, text in _texts(value, (key,)):
            # A model entry is named by its place in the list (_where expects a union tag after).
            refuse_control(_where(loc[:2] if key == "models" else loc, layers), text)


def _texts(value: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every text in a YAML value (strings, paths, mapping keys), with where it is."""
    if isinstance(value, (str, Path)):
        yield loc, str(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield loc, str(key)
            yield from _texts(item, (*loc, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _texts(item, (*loc, index))


def with_user_files(models: str | None, code: Sequence[str], inputs: str | None) -> Any:
    """The `--models` override with `--code` and `--inputs` attached to each model file it
    names (paths relative to the current folder); `models` itself when neither is given."""
    if not code and inputs is None:
        return models
    names = _csv(models or "")
    files = [name for name in names if _names_a_file(name, Path("."))]
    if not files:
        flag = "--code" if code else "--inputs"
        raise ConfigError(
            f"{flag}: applies to model files given with --models (e.g. --models "
            "./my_model.keras); for other models write an entry in matrix.yaml: "
            "models: [{model: NAME, inputs: FILE.npz}]"
        )
    extra: dict[str, Any] = {"code": [m for item in code for m in _csv(item)]}
    if inputs is not None:
        extra["inputs"] = inputs
    return [{"model": name, **extra} if name in files else name for name in names]


def _rebased(layer: dict[Any, Any], folder: Path) -> dict[Any, Any]:
    """A matrix file's paths (model files, code, inputs) taken relative to the file's own
    folder, not to where `matrix` runs: the file means the same files from anywhere."""
    items = layer.get("models")
    if isinstance(items, str):
        items = _csv(items)
    if folder == Path(".") or not isinstance(items, list):
        return layer
    return {**layer, "models": [_rebase_item(item, folder) for item in items]}


def _rebase_item(item: Any, folder: Path) -> Any:
    if isinstance(item, str):
        return _rebase(item, folder) if _names_a_file(item, folder) else item
    if not isinstance(item, dict):
        return item  # validation names what is wrong with it
    item = dict(item)
    if isinstance(item.get("model"), str) and _names_a_file(item["model"], folder):
        item["model"] = _rebase(item["model"], folder)
    code = _csv(item["code"]) if isinstance(item.get("code"), str) else item.get("code")
    if isinstance(code, list):
        item["code"] = [_rebase(p, folder) if isinstance(p, str) else p for p in code]
    if isinstance(item.get("inputs"), str):
        item["inputs"] = _rebase(item["inputs"], folder)
    return item


def _rebase(path: str, folder: Path) -> str:
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else os.path.normpath(folder / expanded)


def _names_a_file(name: str, folder: Path) -> bool:
    """Whether a model name is a path rather than a keras.applications name or a size rung:
    it has a folder or an extension, or exists in `folder`. A typo of a known name stays a
    name, so its error still suggests the close ones."""
    with contextlib.suppress(CatalogError):
        if parse_model(name).kind != "file":
            return False
    return os.sep in name or bool(os.path.splitext(name)[1]) or (folder / name).exists()


@lru_cache(maxsize=1)
def _builtin_layer() -> dict[Any, Any]:
    """default.yaml, parsed once. Callers never mutate it: load_config merges into a new dict."""
    text = resources.files("matrix.plan").joinpath("default.yaml").read_text(encoding="utf-8")
    return _read_yaml(BUILTIN_LABEL, text)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read: {reason}") from None


def _read_yaml(label: str, text: str) -> dict[Any, Any]:
    """Parse one layer; a syntax error names the file and line, as an editor would."""
    try:
        data = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{label}:{mark.line + 1}" if mark is not None else label
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{label}: expected a mapping of keys such as models, formats, repeats "
            f"(got a {type(data).__name__})"
        )
    return data


def _one_line(error: ErrorDetails, layers: list[tuple[str, dict[Any, Any]]]) -> str:
    """`file: key: problem` for a file value, `--flag: problem` for a command-line value."""
    return f"{_where(error['loc'], layers)}: {_describe(error)}"


def _where(loc: str | tuple[str | int, ...], layers: list[tuple[str, dict[Any, Any]]]) -> str:
    """`--flag` when the key's value came from the command line, else `file: key[.sub]`."""
    loc = (loc,) if isinstance(loc, str) else loc
    if loc[:1] == ("models",) and len(loc) > 2:
        loc = loc[:2] + loc[3:]  # drop the union's tag: models[1].code, not models[1].entry.code
    key = loc[0] if loc else ""
    source = next((label for label, data in reversed(layers) if key in data), BUILTIN_LABEL)
    if source == "":
        flag = next((part for part in loc[2:3] if part in ("code", "inputs")), key)
        return f"--{_FLAGS.get(str(flag), str(flag).replace('_', '-'))}"
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return f"{source}: {path.lstrip('.')}"


def _describe(error: ErrorDetails) -> str:
    """Turn a pydantic error into the words a user needs: the rule, the allowed values, the got."""
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "extra_forbidden":
        in_entry = error["loc"][0] == "models"
        fields = list((ModelEntry if in_entry else MatrixConfig).model_fields)
        close = difflib.get_close_matches(str(error["loc"][-1]), fields, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"unknown key{hint}; valid keys are {', '.join(fields)}"
    if kind == "missing":
        return "missing; give the model's name or path, e.g. model: ./my_model.keras"
    if kind == "value_error":
        return str(ctx["error"])  # a CatalogError: already names the value and the choices
    if kind in ("greater_than_equal", "greater_than"):
        op = ">=" if kind == "greater_than_equal" else ">"
        return f"must be {op} {ctx.get('ge', ctx.get('gt'))} (got {got!r})"
    if kind == "less_than_equal":
        return f"must be <= {ctx['le']} (got {got!r})"
    if kind == "literal_error":
        return f"must be {ctx['expected']} (got {got!r})"
    if kind.startswith("int_"):
        return f"must be a whole number (got {got!r})"
    if kind == "too_short":
        choices = _ALL.get(str(error["loc"][0]))
        return f"name at least one of all, {', '.join(choices)}" if choices else "name at least one"
    if kind == "string_type":
        return f"must be a name (got {got!r})"
    if kind == "dict_type":
        example = "input name: size, e.g. {tokens: 64}" if error["loc"][-1] == "dims" else "keys"
        return f"must be a mapping of {example} (got {got!r})"
    if kind in ("tuple_type", "list_type"):
        return f"must be a list or a comma-separated string (got {got!r})"
    return f"{error['msg']} (got {got!r})"
