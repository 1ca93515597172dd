"""compat.yaml stays honest: every minor present, facts spot-checked, pins valid, docs in sync."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from pydantic import ValidationError

from harness import REQUIRES_PYTHON
from matrix.build.dockerfile import HARNESS
from matrix.plan.compat import CUDA_IMAGE_PYTHON, TfMinor, load_table, markdown

REPO = Path(__file__).resolve().parents[2]
TABLE = load_table()
MINORS = [f"2.{n}" for n in range(2, 22)]


def test_every_minor_from_2_2_to_2_21_is_present_in_version_order() -> None:
    assert list(TABLE.minors()) == MINORS


@pytest.mark.parametrize(
    ("minor", "pythons"),
    [  # the latest patch's cpXY wheels on PyPI
        ("2.2", ("3.6", "3.7", "3.8")),
        ("2.5", ("3.7", "3.8", "3.9")),
        ("2.11", ("3.8", "3.9", "3.10")),
        ("2.14", ("3.9", "3.10", "3.11")),
        ("2.19", ("3.9", "3.10", "3.11", "3.12")),
        ("2.20", ("3.9", "3.10", "3.11", "3.12", "3.13")),
        ("2.21", ("3.10", "3.11", "3.12", "3.13")),
    ],
)
def test_python_support_matches_the_wheels(minor: str, pythons: tuple[str, ...]) -> None:
    assert TABLE.root[minor].python == pythons


@pytest.mark.parametrize(
    ("spec", "release"),
    [
        ("2.2", "2.2.3"),
        ("2.15", "2.15.1"),
        ("2.16", "2.16.2"),
        ("2.21", "2.21.0"),
        ("2.9.1", "2.9.1"),
    ],
)
def test_a_minor_means_its_latest_final_release(spec: str, release: str) -> None:
    assert TABLE.resolve(spec)[1] == release


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "2.15; rm -rf /",
            "invalid TensorFlow version '2.15; rm -rf /'; "
            "write a minor such as 2.21 or a release such as 2.21.0",
        ),
        ("2.15\n", "invalid TensorFlow version '2.15\\n'; "),
        ("2.16.0", "TensorFlow 2.16.0 is not a final release; 2.16 has 2.16.1, 2.16.2"),
        ("1.15", "unknown TensorFlow minor '1.15'; choose from 2.2, 2.3, "),
    ],
)
def test_resolve_rejects_what_does_not_exist(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        TABLE.resolve(spec)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def _pins(minor: str) -> list[str]:
    entry = TABLE.root[minor]
    optional = [entry.keras, entry.tf_keras, entry.litert]
    return [
        *(pin for pin in optional if pin),
        *entry.keras_by_python.values(),
        *entry.constraints,
    ]


@pytest.mark.parametrize("minor", MINORS)
def test_every_pin_is_a_plain_pep508_requirement(minor: str) -> None:
    for pin in _pins(minor):
        requirement = Requirement(pin)  # raises InvalidRequirement if it is not PEP 508
        assert (requirement.marker, requirement.url, requirement.extras) == (None, None, set())
        # pins are written into Dockerfiles: name and specifier characters only
        assert re.fullmatch(r"[a-z0-9.-]+[<>=~!][0-9.<>=~!,]*|[a-z0-9.-]+", pin), pin


@pytest.mark.parametrize("minor", MINORS)
def test_keras_and_tf_keras_pins_follow_the_tf_minor(minor: str) -> None:
    entry, n = TABLE.root[minor], int(minor.split(".")[1])
    if n <= 5:
        assert entry.keras is None  # bundled in TF
    elif n <= 15:
        assert entry.keras == f"keras~=2.{n}.0"
    assert entry.keras3 == (n >= 16)
    assert entry.tf_keras == (f"tf-keras~=2.{n}.0" if n >= 14 else None)
    assert (entry.and_cuda is not None) == (n >= 14)
    assert (entry.litert is not None) == (n >= 20)


@pytest.mark.parametrize(
    ("minor", "keras"),
    [
        ("2.16", "keras>=3.1,<3.5"),
        ("2.17", "keras>=3.2,<3.7"),
        ("2.18", "keras>=3.5,<3.14"),
        ("2.19", "keras>=3.5,<3.10"),
        ("2.20", "keras>=3.10,<3.16"),
        ("2.21", "keras==3.13.2"),
    ],
)
def test_keras3_pins(minor: str, keras: str) -> None:
    assert TABLE.root[minor].keras == keras


def test_keras_is_lowered_where_the_pinned_release_has_no_wheel_for_the_python() -> None:
    # keras 3.13 requires Python >= 3.11 (its METADATA on PyPI); TF 2.21 still supports 3.10
    assert TABLE.root["2.21"].keras_for("3.10") == "keras~=3.12.0"
    assert TABLE.root["2.21"].keras_for("3.11") == "keras==3.13.2"


@pytest.mark.parametrize("minor", MINORS)
def test_rules_only_name_pythons_and_releases_of_their_minor(minor: str) -> None:
    entry = TABLE.root[minor]
    assert set(entry.keras_by_python) <= set(entry.python)
    if entry.and_cuda is not None:
        assert set(entry.and_cuda.broken_python) <= set(entry.python)
        assert set(entry.and_cuda.broken_release) <= set(entry.releases[:-1])  # latest works
    if entry.docker is not None:
        assert all(tag.split("-")[0] in entry.releases for tag in entry.docker.tags)


def test_every_minor_without_and_cuda_has_a_cuda_image_and_python_3_8_wheels() -> None:
    """GPU cells of TF < 2.14 install Python 3.8 and the TF wheel on an official -gpu image."""
    for minor, entry in TABLE.root.items():
        if entry.and_cuda is None:
            assert entry.cuda_image, minor
            assert CUDA_IMAGE_PYTHON in entry.python, minor
    assert TABLE.root["2.2"].cuda_image == "tensorflow/tensorflow:2.2.2-gpu"
    assert TABLE.root["2.3"].cuda_image == "tensorflow/tensorflow:2.3.4-gpu"  # newest, not first
    assert TABLE.root["2.17"].cuda_image is None  # no -gpu tag known; [and-cuda] instead


def test_a_minor_without_and_cuda_or_a_gpu_image_is_rejected() -> None:
    entry = TABLE.root["2.13"].model_dump()
    entry["docker"]["tags"] = ["2.13.0"]
    with pytest.raises(ValidationError, match="GPU cells need an official -gpu tag"):
        TfMinor.model_validate(entry)


HARNESS_SOURCES = sorted(HARNESS.rglob("*.py"))
# Classes that `X[...]` subscripts at run time from Python 3.9 on only (PEP 585).
_BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


@pytest.mark.parametrize("source", HARNESS_SOURCES, ids=lambda p: p.name)
def test_the_harness_parses_with_the_oldest_python_it_supports(source: Path) -> None:
    """The harness runs in every image, down to Python 3.8: no newer syntax may creep in."""
    oldest = tuple(int(part) for part in REQUIRES_PYTHON.split("."))
    ast.parse(source.read_text(encoding="utf-8"), str(source), feature_version=oldest)


def _unevaluated(tree: ast.Module) -> set[int]:
    """ids of the nodes Python never evaluates: postponed annotations, `if TYPE_CHECKING:`."""
    postponed = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(alias.name == "annotations" for alias in node.names)
        for node in tree.body
    )
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            roots += node.body
        elif postponed and isinstance(node, (ast.arg, ast.AnnAssign)) and node.annotation:
            roots.append(node.annotation)
        elif postponed and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            roots += [node.returns] if node.returns else []
    return {id(child) for root in roots for child in ast.walk(root)}


@pytest.mark.parametrize("source", HARNESS_SOURCES, ids=lambda p: p.name)
def test_the_harness_subscripts_no_builtin_generic_at_run_time(source: Path) -> None:
    """`list[str]` or `collections.abc.Callable[...]` outside an annotation fails on 3.8.

    The grammar check above cannot see it: the syntax is old, the run-time support is 3.9+.
    """
    tree = ast.parse(source.read_text(encoding="utf-8"), str(source))
    generics = _BUILTIN_GENERICS | {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "collections.abc"
        for alias in node.names
    }
    skip = _unevaluated(tree)
    found = [
        f"{source.name}:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript)
        and id(node) not in skip
        and isinstance(node.value, ast.Name)
        and node.value.id in generics
    ]
    assert found == []


def test_docs_table_is_generated_from_the_data_and_lists_every_minor() -> None:
    text = (REPO / "docs" / "compat.md").read_text(encoding="utf-8")
    assert text == markdown(TABLE), "stale: run `python -m matrix.plan.compat > docs/compat.md`"
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| 2.")]
    assert rows == MINORS
