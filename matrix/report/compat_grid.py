"""The compatibility grid of a cross-load: saved-by (rows) × loaded-by (columns), per model and
format, answering an upgrade's question for each pair of environments: does what S saved load
in L, how fast, and does it still predict the same? ✓ with the median time to first prediction,
✗ with the one-line reason (the whole message on hover), ⚠ when it loads but parity fails; the
diagonal is each environment's own result. `pair_cells` tables those verdicts once for the
report, the terminal, `matrix compare` and `matrix history`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich import box
from rich.table import Table as RichTable
from rich.text import Text

from harness.catalog import CACHE_MODES, FORMATS
from matrix.report.order import natural_sorted
from matrix.report.sections import ReportFrames, Section
from matrix.report.text import Cell, Table, missing, seconds
from matrix.results.dataset import CELL, PARITY_ORDER, Dataset, measured
from matrix.results.reader import short_reason

PAIR = ["run_id", "saved_by_env_id", "env_id", "model", "format"]  # a pair, cache modes apart
PAIR_CELL = [*PAIR, "cache_mode"]
LOADED = ("ok", "parity-fail")  # verdicts of a pair whose artifact loaded and predicted
COLUMNS = [
    *PAIR_CELL,
    "verdict",
    "load_api",
    "fallback",
    "refused",
    "refused_apis",
    "exception",
    "n",
    "first_prediction_median",
    "parity_status",
    "parity_rel_err_max",
    "reason",
]
REASON_CHARS = 80  # of the one-line reason a grid cell shows
_CAUSE = "Exception encountered:"  # Keras's deserialization wrapper: its cause follows
_PATH = re.compile(r"(?<![\w.])/[^\s'\"`,)]+/([^\s'\"`,)/]+)")  # a path, to show as its last part
# How a grid names an API when a fallback is involved (the record keeps the full name).
_SHORT_API = {
    "keras.models.load_model": "load_model",
    "keras.layers.TFSMLayer": "TFSMLayer",
    "tf_keras.models.load_model": "tf_keras",
}
_STYLE = {"ok": "good", "parity-fail": "uninformative", "incompatible": "bad"}


def one_line(message: Any) -> str:
    """A refusal in one line for a grid cell: its first line, paths cut to their last part;
    for Keras's "Error when deserializing … Exception encountered: X", the X that says why."""
    text = str(message or "")
    cause = text.rpartition(_CAUSE)[2] if _CAUSE in text else text
    return short_reason(_PATH.sub(r"\1", cause), REASON_CHARS)


def _worst_parity(statuses: pd.Series) -> str | None:
    """The worst parity verdict of a cell's trials (fail > not-informative > pass)."""
    codes = statuses.map({s: i for i, s in enumerate(PARITY_ORDER)})
    return None if codes.isna().all() else PARITY_ORDER[int(codes.max())]


def _refusal(row: dict[str, Any]) -> str:
    return f"{row['load_api']} raised {row['exception']}: {row['reason']}"


def _verdict(rows: pd.DataFrame, refusals: pd.DataFrame) -> dict[str, Any]:
    """One cache mode of one pair: its trials (`rows`) and the pair's refusals in any mode
    (a refusal does not depend on the cache mode, and is recorded once). The cell's own rows
    speak first: the pair's refusals are shared by every mode, so they make the cell
    `incompatible` only when it has nothing else (a cold cell that could not be timed, or a
    fallback whose loads were all invalid, says that, not that the API refused)."""
    before = {
        "refused": "\n\n".join(_refusal(r) for r in refusals.to_dict("records")),
        "refused_apis": ", ".join(refusals["load_api"].astype(str)),
    }
    ok = measured(rows)
    if len(ok):
        parity = _worst_parity(ok["parity_status"])
        first = ok.iloc[0]
        return {
            "verdict": "parity-fail" if parity == "fail" else "ok",
            "load_api": first["load_api"],
            "fallback": bool(first["fallback"]),
            **before,
            "n": len(ok),
            "first_prediction_median": pd.to_numeric(ok["first_prediction_s"]).median(),
            "parity_status": parity,
            "parity_rel_err_max": pd.to_numeric(ok["parity_rel_err"]).max(),
            "reason": "",
        }
    for status in ("error", "invalid", "unsupported", "incompatible"):
        found = (refusals if status == "incompatible" else rows[rows["status"].eq(status)]).tail(1)
        if len(found):
            last = found.iloc[0]
            return {
                "verdict": status,
                "load_api": last["load_api"],
                "fallback": bool(last["fallback"]) if not missing(last["fallback"]) else False,
                "exception": last["exception"],
                **before,
                "n": 0,
                "reason": str(last["reason"] or ""),
            }
    return {"verdict": "not measured", **before, "n": 0, "reason": ""}


def pair_cells(ds: Dataset) -> pd.DataFrame:
    """One row per cross-load cell (run, saver, loader, model, format, cache mode): `verdict`
    (`ok`, `parity-fail`, `incompatible`, `error`, `invalid`, `unsupported`, `not measured`),
    the `load_api` that gave it (`fallback` when a refusal came first), `refused` (each
    refusal before it, `api raised Exception: message`), `refused_apis` (their APIs), the
    `exception` of an `incompatible` verdict, `n`, the median `first_prediction_median`, the
    worst `parity_status` and `parity_rel_err_max`, and the `reason` of a verdict that is not
    a load."""
    trials = ds.crossloads[ds.crossloads["kind"].eq("trial")]
    rows = []
    for key, pair in trials.groupby(PAIR, sort=False, dropna=False):
        refusals = pair[pair["status"].eq("incompatible")].sort_values(["fallback", "time"])
        modes = [m for m in CACHE_MODES if m in set(pair["cache_mode"])]
        for mode in modes:
            verdict = _verdict(pair[pair["cache_mode"].eq(mode)], refusals)
            rows.append({**dict(zip(PAIR, key)), "cache_mode": mode, **verdict})
    return pd.DataFrame(rows, columns=COLUMNS)


def own_cells(ds: Dataset) -> pd.DataFrame:
    """Each environment's own cells in the same shape (`saved_by_env_id` is the environment
    itself, `load_api` the format's own loader): the diagonal of a cross-load that did not
    load its own artifacts again."""
    trials = ds.trials
    ok = measured(trials)
    rows = []
    for key, cell in trials.groupby(CELL, sort=False, dropna=False):
        mine = ok.loc[ok.index.intersection(cell.index)]
        if len(mine):
            parity = _worst_parity(mine["parity_status"])
            verdict = {
                "verdict": "parity-fail" if parity == "fail" else "ok",
                "n": len(mine),
                "first_prediction_median": pd.to_numeric(mine["first_prediction_s"]).median(),
                "parity_status": parity,
                "parity_rel_err_max": pd.to_numeric(mine["parity_rel_err"]).max(),
                "reason": "",
            }
        else:
            last = cell.iloc[-1]
            verdict = {"verdict": last["status"], "n": 0, "reason": str(last["reason"] or "")}
        found = dict(zip(CELL, key))
        rows.append({**found, "saved_by_env_id": found["env_id"], **verdict})
    return pd.DataFrame(rows, columns=COLUMNS)


@dataclass
class Grid:
    """One model and format of one run, in one cache mode: `cells` by (saver, loader)."""

    run_id: str
    model: str
    format: str
    cache_mode: str
    savers: list[str]
    loaders: list[str]
    cells: dict[tuple[str, str], dict[str, Any]]
    not_saved: dict[str, str]  # saver -> why it has no such artifact
    versions: dict[str, str]  # env id -> "TF 2.12.1, Keras 2.12.0"


def _grid_mode(modes: set[str]) -> str:
    """The warmest cache mode measured: the grid's times answer "how fast", not "how cold"."""
    return next(m for m in reversed(CACHE_MODES) if m in modes)


def grids(ds: Dataset) -> list[Grid]:
    """The grids of the latest run that cross-loaded, per model (as saved) and format."""
    cross = pair_cells(ds)
    if cross.empty:
        return []
    run = max(cross["run_id"])
    cross = cross[cross["run_id"].eq(run)]
    own = own_cells(ds)
    own = own[own["run_id"].eq(run)]
    envs = ds.environments[ds.environments["run_id"].eq(run)]
    versions = {
        str(e["env_id"]): f"TF {e['tensorflow']}, Keras {e['keras']}"
        for e in envs.to_dict("records")
        if not missing(e.get("tensorflow"))
    }
    arts = ds.artifacts[ds.artifacts["run_id"].eq(run)]
    loaders = natural_sorted(cross["env_id"].unique())
    savers = natural_sorted(set(cross["saved_by_env_id"]) | set(loaders))
    found = []
    for (model, fmt), pairs in cross.groupby(["model", "format"], sort=False):
        mode = _grid_mode(set(pairs["cache_mode"]))
        # the diagonal as loaded in the cross-load's rounds where it was, else the run's own
        shown = pd.concat([own[own["model"].eq(model) & own["format"].eq(fmt)], pairs])
        shown = shown[shown["cache_mode"].eq(mode)]
        refused = arts[arts["model"].eq(model) & arts["format"].eq(fmt) & arts["status"].ne("ok")]
        found.append(
            Grid(
                run_id=run,
                model=str(model),
                format=str(fmt),
                cache_mode=mode,
                savers=savers,
                loaders=loaders,
                cells={(r["saved_by_env_id"], r["env_id"]): r for r in shown.to_dict("records")},
                not_saved={
                    str(r["env_id"]): f"{r['status']}: {r['reason']}"
                    for r in refused.to_dict("records")
                },
                versions=versions,
            )
        )
    order = {f: i for i, f in enumerate(FORMATS)}
    return sorted(found, key=lambda g: (g.model, order.get(g.format, 99)))


def _api(name: Any) -> str:
    return _SHORT_API.get(str(name), str(name))


def _api_name(name: Any) -> str:
    """The API a cell's hover names; the diagonal's is the format's own loader."""
    return "the format's own loader" if missing(name) else str(name)


def grid_cell(grid: Grid, saver: str, loader: str) -> tuple[str, str, str]:
    """(text, verdict or "", hover text) of one cell."""
    if saver in grid.not_saved:
        return "not saved", "", f"{saver} has no {grid.format} artifact: {grid.not_saved[saver]}"
    cell = grid.cells.get((saver, loader))
    if cell is None:
        return "", "", ""
    verdict, refused = cell["verdict"], "" if missing(cell["refused"]) else str(cell["refused"])
    whose = "its own artifact" if saver == loader else f"the artifact saved by {saver}"
    where = f"{loader} loading {whose} ({grid.versions.get(saver, '?')})"
    if verdict in LOADED:
        text = f"✓ {seconds(cell['first_prediction_median'])}"
        if refused:
            gave_up = ", ".join(_api(api) for api in str(cell["refused_apis"]).split(", "))
            text += f" via {_api(cell['load_api'])} ({gave_up} ✗)"
        if verdict == "parity-fail":
            text = f"⚠ {text[2:]}, parity fail (rel err {cell['parity_rel_err_max']:.3g})"
        hover = (
            f"{where} with {_api_name(cell['load_api'])}: median time to first "
            f"prediction of {cell['n']} trial(s); parity {cell['parity_status']}"
        )
        return text, verdict, hover + (f"\n\nrefused first:\n{refused}" if refused else "")
    if verdict == "incompatible":
        text = f"✗ {cell['exception']}: {one_line(cell['reason'])}"
        return text, verdict, f"{where}: every API refused\n\n{refused}"
    return f"{verdict}: {one_line(cell['reason'])}", verdict, f"{where}: {cell['reason']}"


def _label(grid: Grid, env: str) -> str:
    return f"{env} ({grid.versions[env]})" if env in grid.versions else env


def html_table(grid: Grid) -> Table:
    """The grid as the report's sortable table (a cell's title carries the whole message)."""
    table = Table(["saved by ↓ · loaded by →", *(_label(grid, e) for e in grid.loaders)])
    for saver in grid.savers:
        cells = [Cell(_label(grid, saver), cls="pick")]
        for loader in grid.loaders:
            text, verdict, hover = grid_cell(grid, saver, loader)
            cls = _STYLE.get(verdict, f"status-{verdict}" if verdict else "unchecked")
            cells.append(Cell(text or "—", cls=cls, title=hover))
        table.add(cells)
    return table


def rich_tables(ds: Dataset) -> list[RichTable]:
    """The grids for the terminal, after `matrix run --cross-load`."""
    styles = {"ok": "green", "parity-fail": "yellow", "incompatible": "red", "error": "red"}
    tables = []
    for grid in grids(ds):
        table = RichTable(
            title=f"Cross-load {grid.model} · {grid.format} ({grid.cache_mode}): saved by "
            "(rows) × loaded by (columns), median time to first prediction",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        table.add_column("saved by", no_wrap=True)
        for loader in grid.loaders:
            table.add_column(loader, overflow="fold")
        for saver in grid.savers:
            row = [Text(saver)]
            for loader in grid.loaders:
                text, verdict, _ = grid_cell(grid, saver, loader)
                row.append(Text(text, style=styles.get(verdict, "dim")))
            table.add_row(*row)
        tables.append(table)
    return tables


def section(f: ReportFrames) -> Section | None:
    """The report's compatibility grids; None for runs without a cross-load."""
    found = grids(f.ds)
    if not found:
        return None
    shown = [
        {
            "title": f"{g.model} · {g.format}",
            "mode": g.cache_mode,
            "table": html_table(g),
            "id": f"t-compat-{i}",
        }
        for i, g in enumerate(found)
    ]
    return Section("compat", "Compatibility grid", {"grids": shown, "run": found[0].run_id})


# ---- compare and history: a pair that loaded and now fails is a regression ----------------------

_RANK = {"ok": 0, "parity-fail": 1, "incompatible": 2, "error": 2}  # worse is higher
STEP_STYLE = {"broke": "red", "fixed": "green", "same": "", "not comparable": "yellow"}


def step(before: Any, after: Any) -> str:
    """`broke` when verdict `after` is worse than `before` (it loaded and now fails, or its
    parity now fails), `fixed` when better, `same`, or `not comparable` when a side measured
    nothing (invalid, unsupported or not measured say nothing of compatibility)."""
    if before not in _RANK or after not in _RANK:
        return "not comparable"
    if _RANK[after] == _RANK[before]:
        return "same"
    return "broke" if _RANK[after] > _RANK[before] else "fixed"


def _served(cell: Mapping[str, Any]) -> str:
    """The API that loaded a `pair_cells` row ("" when it did not load)."""
    return str(cell["load_api"]) if cell["verdict"] in LOADED else ""


def _refused(cell: Mapping[str, Any]) -> set[str]:
    apis = cell["refused_apis"]
    return set() if missing(apis) or not apis else set(str(apis).split(", "))


def pair_step(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """The step of one cross-load cell between two runs (`pair_cells` rows), by its verdict and
    by the API that loaded it: the API that loaded it before now refuses it → `broke`, even
    when a fallback still loads it (code calling that API fails now, docs/cross-load.md); an
    API that refused it before now loads it → `fixed`; loaded by two different APIs with no
    refusal to explain it (the loader's stack changed its APIs) → `not comparable`."""
    moved = step(before["verdict"], after["verdict"])
    if moved == "not comparable":
        return moved
    served_before, served_after = _served(before), _served(after)
    # Refusals are the pair's, from any cache mode: an API that still loads this cell is not
    # refused it.
    if moved == "broke" or (served_before in _refused(after) and served_after != served_before):
        return "broke"
    if moved == "fixed" or (served_after in _refused(before) and served_after != served_before):
        return "fixed"
    if served_before and served_after and served_before != served_after:
        return "not comparable"
    return "same"


def shown(cell: Mapping[str, Any]) -> str:
    """A cell's verdict as compare and history show it: `ok via TFSMLayer` when a fallback
    loaded it (so a change of API shows beside its step)."""
    verdict = str(cell["verdict"])
    fallback = not missing(cell["fallback"]) and bool(cell["fallback"])
    return f"{verdict} via {_api(cell['load_api'])}" if verdict in LOADED and fallback else verdict


def _why(cell: Mapping[str, Any]) -> str:
    """What compare and history say of a cell: the reason of a verdict that is not a load,
    else the refusals before the API that loaded it ("" when the first API did)."""
    for text in (cell["reason"], cell["refused"]):
        if not missing(text) and text:
            return str(text)
    return ""


def pair_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Every cross-load cell of `after` (a `pair_cells` table) against the same cell of
    `before`: what each showed (`shown_a`, `shown_b`), their `step` and the later one's
    `reason` (`_why`)."""
    keys = PAIR_CELL[1:]
    judged = ["verdict", "load_api", "fallback", "refused_apis"]
    both = before[[*keys, *judged]].merge(after, on=keys, suffixes=("_a", "_b"))
    rows = both.to_dict("records")
    a, b = ([{k: r[f"{k}_{side}"] for k in judged} for r in rows] for side in "ab")
    both["shown_a"] = [shown(cell) for cell in a]
    both["shown_b"] = [shown(cell) for cell in b]
    both["step"] = [pair_step(x, y) for x, y in zip(a, b)]
    both["reason"] = [_why(r) for r in rows]
    return both[[*keys, "shown_a", "shown_b", "step", "reason"]]


def pair_history(cells: pd.DataFrame) -> pd.DataFrame:
    """Per cross-load cell over the runs of `cells` (a `pair_cells` table): what it showed in
    each run (`run_id` → `shown` in `shown`), the step of its last run from the one before
    (`step`, "" for a cell of one run) and the last one's `reason` (`_why`)."""
    keys = PAIR_CELL[1:]
    rows = []
    ordered = cells.sort_values("run_id", kind="stable")
    for key, runs in ordered.groupby(keys, sort=False, dropna=False):
        found = runs.to_dict("records")
        moved = pair_step(found[-2], found[-1]) if len(found) > 1 else ""
        rows.append(
            {
                **dict(zip(keys, key)),
                "shown": {r["run_id"]: shown(r) for r in found},
                "step": moved,
                "reason": _why(found[-1]),
            }
        )
    return pd.DataFrame(rows, columns=[*keys, "shown", "step", "reason"])


def changes_table(changes: pd.DataFrame, title: str, runs: list[str] | None = None) -> RichTable:
    """Cross-load cells for `matrix compare` (verdict A → B) or `matrix history` (`runs`: one
    column per run, from a `pair_history` table), with the step of each."""
    table = RichTable(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("saved by", "loaded by", "model", "format", "cache"):
        table.add_column(name, no_wrap=True)
    for run in runs or ["A", "B"]:
        table.add_column(run.replace("-", "\n", 1), no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for row in changes.to_dict("records"):
        seen = (
            [row["shown"].get(run, "") for run in runs]
            if runs
            else [row["shown_a"], row["shown_b"]]
        )
        table.add_row(
            *[Text(str(row[k])) for k in PAIR_CELL[1:]],
            *[Text(v) for v in seen],
            Text(row["step"], style=STEP_STYLE.get(row["step"], "")),
            Text(one_line(row.get("reason", ""))),
        )
    return table
