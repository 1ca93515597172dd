"""`python -m harness crossload`: load what other environments saved, timed as their own trials.

Run in the loader's environment once every saver's run is over. For each saver (the orchestrator's
`--saved-by` file), model, format and cache mode, it loads the saver's artifact with the API
this stack offers for it (harness.formats.cross_load_apis), in fresh processes with the cache
preparation and proofs of `harness run` (it is a `Run`), and writes `trial` records that carry
`saved_by`. A load that raises is `incompatible`: the answer for that pair, recorded once with
the exception, and the next API users fall back to is tried at once; a crash stays `error`.
Every load is a fresh process (never forked), and `--repeats auto` is the fewest repeats
`harness.precision` allows (the precision-based stopping of own cells does not apply).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
from dataclasses import dataclass, replace
from typing import Any

from harness import precision
from harness.artifact_cache import reference_name
from harness.cache import files_of
from harness.catalog import CatalogError, ModelOptions, ModelSpec, parse_model
from harness.contract import RunSpec
from harness.envinfo import installed_tensorflow
from harness.formats import ARTIFACTS, FORMATS, cross_load_apis
from harness.runner import COLD_REFUSED, ModelArtifacts, Run, Saved, _read_events
from harness.runtime import keras_impl_for, version_tuple

_REFERENCE = re.compile(r"reference-[A-Za-z0-9_.-]+\.npz")


@dataclass(frozen=True)
class Saver:
    """An environment whose artifacts are loaded here: who it is, and what it saved."""

    env_id: str
    tensorflow: str
    keras: str
    keras_impl: str
    saved: dict[str, list[str]]  # model slug -> the formats it saved (status ok)

    def record(self) -> dict[str, str]:
        """The `saved_by` field of this saver's cross-load trials."""
        return {
            "env_id": self.env_id,
            "tensorflow": self.tensorflow,
            "keras": self.keras,
            "keras_impl": self.keras_impl,
        }


def read_savers(path: str) -> list[Saver]:
    """The `--saved-by` file: `{"savers": [{env_id, tensorflow, keras, keras_impl, saved}]}`.
    A bad file is a CatalogError naming the field (exit 2, as for any bad argument)."""
    try:
        with open(path) as handle:
            entries = json.load(handle)["savers"]
        savers = [
            Saver(
                env_id=str(e["env_id"]),
                tensorflow=str(e["tensorflow"]),
                keras=str(e["keras"]),
                keras_impl=str(e["keras_impl"]),
                saved={str(m): [str(f) for f in fmts] for m, fmts in e["saved"].items()},
            )
            for e in entries
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CatalogError(f"--saved-by {path}: not a savers file ({exc!r})") from None
    for saver in savers:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", saver.env_id) or saver.env_id.startswith("."):
            raise CatalogError(f"--saved-by: env_id {saver.env_id!r} is not one folder name")
    return savers


@dataclass
class PairCell:
    """One (saver, model, format, cache mode) and how far down its APIs it has gone."""

    saver: Saver
    arts: ModelArtifacts
    fmt: str
    mode: str
    saved: Saved
    apis: list[str]
    at: int = 0  # index of the API in use: past every refusal so far
    blocked: str = ""  # why it cannot be timed at all (one record)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.saver.env_id, self.arts.spec.slug, self.fmt


class CrossLoadRun(Run):
    """Cross-load trials of every saver's artifacts in this environment (see module doc)."""

    def __init__(
        self,
        spec: RunSpec,
        savers: list[Saver],
        model_options: dict[str, ModelOptions] | None = None,
    ) -> None:
        # The plan record says what the step does (module doc).
        repeats = spec.repeats or precision.MIN_REPEATS
        fixed = replace(spec, process="fresh", trial_process="fresh", repeats=repeats)
        super().__init__(fixed, model_options)
        self.savers = savers
        tf = installed_tensorflow() or "0.0"
        self.keras_impl = keras_impl_for(version_tuple(tf))
        self.tf_keras = importlib.util.find_spec("tf_keras") is not None
        # (saver, model, format, API) -> refused: a refusal does not depend on the cache mode
        self.refused: set[tuple[str, str, str, str]] = set()

    def cells(self) -> list[PairCell]:
        """Every cell this run times, in saver, model, format, cache mode order."""
        found = []
        for saver in self.savers:
            for name in self.opts.models:
                spec = replace(
                    parse_model(name), options=self.model_options.get(name, ModelOptions())
                )
                for fmt in self.opts.formats:
                    if fmt in saver.saved.get(spec.slug, []):
                        found += self._cells_of(saver, spec, fmt)
        return found

    def _cells_of(self, saver: Saver, spec: ModelSpec, fmt: str) -> list[PairCell]:
        folder = os.path.join(self.work, saver.env_id, spec.slug)
        artifact = FORMATS[fmt].artifact
        path = os.path.join(folder, ARTIFACTS[artifact].filename)
        reference = _reference(folder, artifact)
        arts = ModelArtifacts(spec=spec, input=os.path.join(folder, "parity-inputs.npz"))
        missing = [p for p in (path, arts.input, reference) if not p or not os.path.exists(p)]
        saved = Saved("ok", path=path, reference=reference, files=[] if missing else files_of(path))
        apis = cross_load_apis(fmt, self.keras_impl, self.tf_keras)
        cells = []
        for mode in self.opts.cache_modes:
            cell = PairCell(saver, arts, fmt, mode, saved, apis)
            if missing:
                cell.blocked = f"the saver's files are not readable here: {missing[0]}"
            elif mode == "cold" and not self.drop_via:
                cell.blocked = COLD_REFUSED
            cells.append(cell)
        return cells

    def planned_trials(self) -> int:
        return self._trials_due(self.cells(), self._rounds())

    def _trials_due(self, cells: list[PairCell], rounds: int) -> int:
        """Trial records `cells` still write in `rounds` more rounds if no API refuses: one a
        round for a cell that loads, one for a blocked cell (not yet written). A refusal adds
        its record, then its fallback loads in the same round, or the cell's rounds are over:
        so `measure` counts again, with what was written, after every round."""
        return sum(1 if cell.blocked else rounds for cell in cells)

    def write_plan(self, **extra: Any) -> None:
        super().write_plan(savers=[s.env_id for s in self.savers], **extra)

    def cross_trial(self, cell: PairCell, rnd: int, order: int) -> bool:
        """One load of the cell's artifact through its current API; whether the cell goes on.

        Made and written as `Run.trial` makes a fresh-process trial, but for a load that
        raises: that is a refusal, written once as `incompatible`, and the next API is tried
        at once, in the same round; a cell whose every API refused is over.
        """
        api = cell.apis[cell.at]
        saver, slug, fmt = cell.key
        if (saver, slug, fmt, api) in self.refused:  # seen in another cache mode
            return self._next_api(cell, rnd, order)
        cell_id = f"{saver}->{self.opts.env_id}/{slug}/{fmt}/{cell.mode}/{api}"
        base = {
            **self.trial_fields(cell_id, slug, fmt, cell.mode, "fresh", rnd, order),
            "saved_by": cell.saver.record(),
            "load_api": api,
            "fallback": cell.at > 0,
        }
        saved = replace(cell.saved, api=api)
        result, invalid = self.spawn_prepared(base, saved, cell.arts, 1)
        if "error" in result and result.get("stage") == "load":
            self.refused.add((saver, slug, fmt, api))
            self.writer.write(
                "trial",
                status="incompatible",
                phase="measure",
                exception=result.get("exception"),
                reason=result.get("message") or result["error"],
                **base,
                **self.result_fields(result),
            )
            return self._next_api(cell, rnd, order)
        phase = "warmup" if rnd < self.opts.warmup else "measure"
        self.write_trial(result, base, phase, saved.files, invalid)
        return True

    def _next_api(self, cell: PairCell, rnd: int, order: int) -> bool:
        cell.at += 1
        return cell.at < len(cell.apis) and self.cross_trial(cell, rnd, order)

    def measure(self) -> None:
        """Rounds over every cell, each in a new shuffled order, as `harness run` does."""
        cells = self.cells()
        live = [c for c in cells if not c.blocked]
        rounds = self._rounds()
        self.writer.write("schedule", trials_scheduled=self._trials_due(cells, rounds))
        for cell in cells:
            if cell.blocked:
                saver, slug, fmt = cell.key
                self.write_untimed(
                    f"{saver}->{self.opts.env_id}/{slug}/{fmt}/{cell.mode}",
                    slug,
                    fmt,
                    cell.mode,
                    "unsupported" if cell.saved.files else "error",
                    cell.blocked,
                    saved_by=cell.saver.record(),
                )
        for rnd in range(rounds):
            order = list(live)
            random.Random(f"{self.opts.seed}-cross-{rnd}").shuffle(order)
            live = [c for pos, c in enumerate(order) if self.cross_trial(c, rnd, pos)]
            due = self._trials_due(live, rounds - rnd - 1)
            self.writer.write("schedule", trials_scheduled=self.writer.trials_written + due)


def _reference(folder: str, artifact: str) -> str:
    """The saver's own outputs on its parity batch for `artifact`: the artifact cache's file,
    else the one the saver's save worker named (only a name in `folder` is taken), else ""."""
    named = os.path.join(folder, reference_name(artifact))
    if os.path.isfile(named) or not os.path.isdir(folder):
        return named
    events = sorted(f for f in os.listdir(folder) if re.fullmatch(r"events-\d+\.jsonl", f))
    for name in events:
        for event in _read_events(os.path.join(folder, name)):
            if event.get("event") == "saved" and event.get("artifact") == artifact:
                base = os.path.basename(str(event.get("reference", "")))
                if _REFERENCE.fullmatch(base):
                    return os.path.join(folder, base)
    return ""
