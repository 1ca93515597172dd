"""The live view of a run: a progress bar per environment, fed by the records it appends.

The harness reports nothing but its records, so progress needs no second channel: the `plan`
record gives the number of trials, each `trial` record advances the bar. `failure` records are
printed as they arrive, because waiting for the summary to learn a whole model failed is slow.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from matrix.results.reader import Record, short_reason


class SweepProgress:
    """The sweep's live view: one bar per environment being measured, `trials written /
    trials planned` and the latest cell under its id. Live from the first bar to the end."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[env]}[/]"),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def bar(self, env_id: str) -> EnvProgress:
        """The bar of one environment, shown once its harness starts (`EnvProgress.start`)."""
        return EnvProgress(self._console, self._progress, env_id)


class EnvProgress:
    """One environment's bar, fed by the records its harness appends."""

    def __init__(self, console: Console, progress: Progress, env_id: str) -> None:
        self._console, self._progress = console, progress
        self._task = progress.add_task(
            "starting the harness", total=None, env=escape(env_id), visible=False
        )

    def start(self) -> None:
        self._progress.start()  # the first bar makes the view live; later calls do nothing
        self._progress.update(self._task, visible=True)

    def update(self, records: list[Record]) -> None:
        """Advance the view by records that have just been written."""
        for record in records:
            kind = record.get("kind")
            if kind == "plan":
                planned = record.get("trials_planned")
                self._show(f"planned {planned} trials", total=planned)
            elif kind == "schedule":  # unsupported cells turned out to need one record each
                self._show("timing loads", total=record.get("trials_scheduled"))
            elif kind == "environment":
                self._show(f"TensorFlow {record.get('tensorflow')}, saving artifacts")
            elif kind == "artifact":
                cell = f"{record.get('model')} · {record.get('format')}"
                status = record.get("status")
                self._show(f"saved {cell}" if status == "ok" else f"{cell}: {status}")
            elif kind == "trial":
                self._progress.advance(self._task)
                self._show(
                    f"{record.get('model')} · {record.get('format')} · {record.get('cache_mode')}"
                )
            elif kind == "failure":
                self._console.print(
                    f"[yellow]failure[/] ({escape(str(record.get('scope')))}) "
                    f"{escape(str(record.get('model') or ''))} "
                    f"{escape(short_reason(record.get('reason'), 160))}"
                )
            elif kind == "done":
                self._show("done")

    def _show(self, description: str, total: int | None = None) -> None:
        """Set the bar's label (and its total, once the plan says it; None leaves it as is)."""
        self._progress.update(self._task, description=escape(description), total=total)
