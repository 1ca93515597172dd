"""`matrix run --cross-load`: every loader environment loads what every other one saved.

After the sweep, each selected loader that ran runs `python -m harness crossload` over the
artifacts of every other environment that ran, through the same backend and the same `Sweep`
as its own run (progress, Ctrl-C, manifest, `--resume`), with its records in the run's
`crossload/` folder: the environments' own records and cells stay exactly as they were. Docker
mounts each saver's artifact volume read-only; a venv reads the saver's artifact folder. Who
each saver is (`saved_by`) is the host's own account of what it made, never what the saver
wrote about itself inside its environment (`saver_entry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from harness.records import dump_json
from harness.runtime import keras_impl_for, version_tuple
from matrix.execute.backends import Backend
from matrix.execute.matrix_run import MatrixRun
from matrix.execute.sweep import FINISHED, EnvOutcome, Sweep
from matrix.plan.environments import Environment, Skipped
from matrix.results.reader import CROSSLOAD_DIR, SAVERS_FILE, read_jsonl


@dataclass(frozen=True)
class CrossLoadStep(MatrixRun):
    """The run as its cross-load step sees it: records under `crossload/`, and each
    loader's harness given the savers (`savers`: `--saved-by` entries, one per saver). A loader
    is one of its savers: its own artifacts are loaded in the same shuffled rounds as the
    others', so the times of a grid's column were measured alike (its diagonal)."""

    savers: tuple[dict[str, Any], ...] = ()
    # The savers' artifacts were brought to this machine for this loader alone (Ray: from the
    # savers' nodes), so a docker loader mounts its own copies, not the savers' volumes.
    received: bool = False

    @property
    def run_dir(self) -> Path:
        return self.config.results_dir / self.run_id / CROSSLOAD_DIR

    def reads_artifacts_of(self, env_id: str) -> tuple[str, ...]:
        return tuple(s["env_id"] for s in self.savers)

    def harness_args(
        self,
        env_id: str,
        out: str | None = None,
        work: str = "",
        seen: Any = None,
        artifact_cache: str = "",
    ) -> list[str]:
        """`crossload` with the run's arguments; `work` is where the savers' folders are (in a
        container: their volumes' mount points), by default each harness's own artifacts
        folder of the run, `<run>/artifacts/<saver>`. A cross-load saves nothing: no
        `artifact_cache`."""
        out = out or str(self.run_dir.absolute())
        work = work or str(self.artifacts_dir(env_id).parent.absolute())
        args = super().harness_args(env_id, out, work, seen)
        given = self.give_savers(env_id)
        return ["crossload", *args[1:], "--saved-by", f"{out}/{given.parent.name}/{given.name}"]

    def give_savers(self, env_id: str) -> Path:
        """Write the savers into the loader's folder (its harness's `--saved-by`): also the
        host's account of whom it gave the loader, which reading its records holds them to
        (`matrix.results.dataset`), so the orchestrating machine writes it even where the
        harness runs elsewhere (Ray)."""
        folder = self.env_dir(env_id)
        folder.mkdir(parents=True, exist_ok=True)
        dump_json(str(folder / SAVERS_FILE), {"savers": list(self.savers)})
        return folder / SAVERS_FILE


def loaders_selected(env_id: str, globs: str) -> bool:
    """Whether `env_id` matches one of the comma-separated `globs` (`cross_load`)."""
    return any(fnmatchcase(env_id, part.strip()) for part in globs.split(",") if part.strip())


def saver_entry(env: Environment, records_file: Path) -> tuple[dict[str, Any] | None, str]:
    """A saver as the harness's `--saved-by` names it, or why it is refused ("" if it is not).

    Who it is — env id, TensorFlow, which Keras — is the host's own account: what it made the
    environment with. Its records were written inside it, so they are trusted only for facts
    that are no identity (its Keras version, the formats it saved) and are held to that
    account: one that contradicts it refuses the saver. (None, "") if it wrote no environment
    record (nothing to load).
    """
    records = read_jsonl(records_file).records
    said = next((r for r in records if r.get("kind") == "environment"), None)
    if said is None:
        return None, ""
    legacy = env.keras == "legacy"
    identity = {
        "env_id": env.id,
        "tensorflow": env.tf,
        "keras_impl": keras_impl_for(version_tuple(env.tf), legacy=legacy),
    }
    wrong = [
        f"{name} {str(said.get(name))!r} where the host made {value!r}"
        for name, value in identity.items()
        if str(said.get(name)) != value
    ]
    if wrong:
        return None, (
            f"{env.id}'s environment record says {', '.join(wrong)}: neither its artifacts "
            "nor its loads are trusted, so it takes no part in the cross-load"
        )
    saved: dict[str, list[str]] = {}
    for r in records:
        if r.get("kind") == "artifact" and r.get("status") == "ok":
            saved.setdefault(str(r.get("model")), []).append(str(r.get("format")))
    return {**identity, "keras": str(said.get("keras")), "saved": saved}, ""


def cross_load(
    run: MatrixRun,
    backend: Backend,
    environments: list[Environment],
    outcomes: list[EnvOutcome],
    console: Console,
) -> list[EnvOutcome]:
    """Run the cross-load step after the sweep; its outcomes (none when fewer than two
    environments ran and were not refused, as there is nothing to cross)."""
    ran = {o.env_id for o in outcomes if o.status in FINISHED}
    found = {
        env.id: saver_entry(env, run.records_file(env.id)) for env in environments if env.id in ran
    }
    refused = [Skipped(env_id, why) for env_id, (_, why) in found.items() if why]
    for skip in refused:
        console.print(f"[yellow]cross-load[/]: {escape(skip.reason)}")
    savers = tuple(entry for entry, _ in found.values() if entry is not None)
    trusted = {s["env_id"] for s in savers}  # a refused environment does not load either
    loaders = [
        env
        for env in environments
        if env.id in trusted
        and loaders_selected(env.id, run.config.cross_load)
        and trusted - {env.id}
    ]
    if not loaders:
        # No step runs, so no manifest of it either: this line is the refusals' only account
        # beside the lines above.
        left = f" and were not refused (refused above: {len(refused)})" if refused else ""
        console.print(
            f"[yellow]cross-load[/]: nothing to do: it needs two environments that ran{left}, "
            f"one of them selected by {escape(run.config.cross_load)!r}"
        )
        return []
    console.print(
        f"[bold]cross-load[/]: {len(loaders)} loader(s) × the artifacts of "
        f"{len(savers)} environment(s), records in {escape(str(run.run_dir / CROSSLOAD_DIR))}/"
    )
    cross = CrossLoadStep(config=run.config, run_id=run.run_id, savers=savers)
    for env in loaders:
        cross.give_savers(env.id)
    return Sweep(cross, backend, loaders, refused, console).run()
