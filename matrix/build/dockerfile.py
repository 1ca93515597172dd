"""Environment -> Dockerfile and build context, and the content hash the image tag is named by.

The build context is written to disk and kept (`<build_root>/<env id>/`), so a user can read
exactly what was built. The tag derives from the hash of that folder (and of the base image's ID
when a daemon is at hand), like asv's environment hash: an unchanged environment keeps its tag and
is never rebuilt; any change to the template, the pins, the harness or the base gives a new one.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
from pathlib import Path

import jinja2

import harness
from matrix.build.pipsettings import FETCH_SCRIPT, SETTINGS_DIR
from matrix.plan.environments import Environment

TEMPLATES = Path(__file__).resolve().parents[2] / "dockerfiles"
HARNESS = Path(harness.__file__).resolve().parent
IMAGE_REPOSITORY = "tf-load-matrix"
LABEL_ENV_ID = "tf-load-matrix.env-id"
LABEL_VERSION = "tf-load-matrix.version"
HARNESS_UID = 10001  # the image's unprivileged `harness` user (and group), who runs the harness

# A Docker image reference: registry/path:tag@digest characters only, no space, nothing else.
_IMAGE_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _shell_word(value: str) -> str:
    """`value` as one shell (and Dockerfile ENV/LABEL) word.

    A newline would end the Dockerfile instruction and start a new one, whatever the quoting, so
    control characters are refused rather than quoted.
    """
    if _CONTROL.search(value):
        raise ValueError(f"refusing to render a value with a control character: {value!r}")
    return shlex.quote(value)


def _image_reference(value: str) -> str:
    if not _IMAGE_REFERENCE.fullmatch(value):
        raise ValueError(f"not a Docker image reference: {value!r}")
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(f"not an environment variable name: {value!r}")
    return value


_JINJA = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)
_JINJA.filters.update(sh=_shell_word, image=_image_reference)


def render(env: Environment) -> str:
    """The Dockerfile of `env`."""
    return _JINJA.get_template(env.template).render(
        template=env.template,
        env_id=env.id,
        base_image=env.base_image,
        python=env.python,
        python_from_apt=env.python_from_apt,
        packages=env.packages,
        env_vars=[(_env_name(name), value) for name, value in env.env_vars],
        settings_dir=SETTINGS_DIR,
        fetch_script=FETCH_SCRIPT,
        label_env_id=LABEL_ENV_ID,
        label_version=LABEL_VERSION,
        version=harness.__version__,
        harness_uid=HARNESS_UID,
    )


def write_build_context(env: Environment, build_root: Path) -> Path:
    """Write `<build_root>/<env.id>/` (Dockerfile + harness sources) and return that folder.

    The folder is recreated each time and holds nothing but the context, because everything in
    it is sent to the daemon and hashed into the tag: keep logs elsewhere. Only the harness's .py
    files are copied; bytecode caches would change the hash without changing what runs.
    """
    context = Path(build_root) / env.id
    if context.exists():
        shutil.rmtree(context)
    context.mkdir(parents=True)
    (context / "Dockerfile").write_text(render(env), encoding="utf-8")
    for source in sorted(HARNESS.rglob("*.py")):
        target = context / "harness" / source.relative_to(HARNESS)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return context


def context_hash(context_dir: Path) -> str:
    """sha256 over the relative path and bytes of every file in the context, in sorted order."""
    digest = hashlib.sha256()
    root = Path(context_dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        for part in (path.relative_to(root).as_posix().encode(), path.read_bytes()):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


def image_tag(env: Environment, context_dir: Path, base_image_id: str = "") -> str:
    """`tf-load-matrix:<env id>-<first 12 hex digits of the content hash>`.

    With a daemon at hand, the base image's ID (`sha256:…`) is hashed in too: a base rebuilt under
    the same name (`tf-load-matrix/base:bookworm`) then gives new tags instead of reusing images
    built on the old one. Without it (`matrix render`) the tag is the context's alone.
    """
    digest = context_hash(context_dir)
    if base_image_id:
        digest = hashlib.sha256(f"{base_image_id}\n{digest}".encode()).hexdigest()
    return f"{IMAGE_REPOSITORY}:{env.id}-{digest[:12]}"
