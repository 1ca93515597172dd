"""`matrix doctor --backend ray`: a cluster's measurement nodes, and which environments run where.

Before a long sweep: each node with a slot, its GPUs, labels, backend, Pythons and code version,
and for every environment of the matrix the nodes that could measure it, or why none can. The
nodes are asked (the survey the ray backend plans with), so the screen shows what a run would do.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from rich.text import Text

from matrix.errors import EnvironmentFailure
from matrix.execute.backends.ray import (
    SLOT,
    Node,
    RayBackend,
    connect,
    mismatch,
    nodes,
    other_code,
    selected,
    survey,
)
from matrix.execute.backends.ray_node import tool_version
from matrix.ops.doctor import Check
from matrix.plan.config import MatrixConfig

START_NODE = (
    f"on each measurement machine: ray start --address HEAD:PORT --resources '{{\"{SLOT}\": 1}}'"
)


def cluster_checks(config: MatrixConfig, build_root: Path) -> tuple[list[Check], list[Table]]:
    """The checks (cluster, code versions, environments) and the two tables that detail them."""
    try:
        connect(config.address)
    except EnvironmentFailure as exc:
        return [Check("ray: cluster", "fail", str(exc), "docs/ray.md")], []
    everyone = nodes()
    targets = selected(everyone, config.ray_nodes)
    if not targets:
        which = f" matching --ray-nodes {config.ray_nodes}" if config.ray_nodes else ""
        detail = f"{len(everyone)} node(s), none alive{which} with a `{SLOT}` slot"
        return [Check("ray: cluster", "fail", detail, START_NODE)], [node_table(everyone)]
    before = tool_version()
    surveyed = survey(config, build_root.absolute(), targets)
    ours = {before, tool_version()}
    backend = RayBackend(config, build_root.absolute(), surveyed)
    environments, skipped = backend.environments(config)
    gpus = sum(node.gpus for node in surveyed)
    checks = [
        Check(
            "ray: cluster",
            "ok",
            f"{len(surveyed)} measurement node(s) of {len(everyone)}, "
            f"{sum(node.slots for node in surveyed)} slot(s), {gpus} GPU(s)",
        ),
        version_check(surveyed, ours),
        niceness_check(surveyed),
        Check(
            "ray: environments",
            "warn" if skipped else "ok",
            f"{len(environments)} can run, {len(skipped)} cannot (table below)",
            "see each one's reason" if skipped else "",
        ),
    ]
    where = Table("environment", "nodes that can measure it")
    for column in where.columns:
        column.overflow = "fold"
    for env in environments:
        where.add_row(env.id, Text(", ".join(n.name for n in surveyed if n.runs(env))))
    for cell in skipped:
        where.add_row(cell.id, Text(f"none: {cell.reason}", style="yellow"))
    return checks, [node_table(everyone, surveyed), where]


def version_check(surveyed: list[Node], ours: set[str]) -> Check:
    """Every node must run this driver's code (`ours`: its version before and after the
    survey), and answer the survey."""
    other = other_code(surveyed, ours)
    if other:
        return Check("ray: code version", "fail", mismatch(other[0]), "docs/ray.md, 'Nodes'")
    failed = [node for node in surveyed if node.survey.get("error")]
    if failed:
        names = "; ".join(f"{node.name}: {node.survey['error']}" for node in failed)
        return Check("ray: code version", "fail", names, "docs/ray.md, 'Nodes'")
    return Check("ray: code version", "ok", f"every node runs {tool_version()}")


def niceness_check(surveyed: list[Node]) -> Check:
    """A measurement at a lower priority than the node's own processes is not a local one."""
    niced = [node for node in surveyed if node.survey.get("niceness", 0) > 0]
    if niced:
        names = ", ".join(f"{node.name}: {node.survey['niceness']}" for node in niced)
        return Check(
            "ray: priority",
            "warn",
            f"the harness would run niced ({names}): Ray's workers are, and these may not undo it",
            "start those nodes with RAY_worker_niceness=0 ray start … (docs/ray.md)",
        )
    return Check("ray: priority", "ok", "the harness runs at the nodes' normal priority")


def _niceness(value: int | None) -> Text:
    return Text("" if value is None else str(value), style="yellow" if value else "")


def node_table(everyone: list[Node], surveyed: list[Node] | None = None) -> Table:
    """One row per node Ray knows; what the survey found for the measurement nodes."""
    found = {node.id: node.survey for node in surveyed or []}
    table = Table("node", "alive", "slots", "GPUs", "labels", "backend", "Pythons", "nice", "code")
    for column in table.columns:
        column.overflow = "fold"
    for node in everyone:
        answer = found.get(node.id, {})
        labels = ", ".join(
            f"{k}={v}" for k, v in sorted(node.labels.items()) if k != "ray.io/node-id"
        )
        table.add_row(
            node.name,
            "yes" if node.alive else Text("no", style="red"),
            str(node.slots) if node.slots else Text("0: not measuring", style="dim"),
            str(node.gpus),
            Text(labels),
            Text(answer.get("backend", answer.get("error", ""))),
            Text(", ".join(answer.get("pythons", []))),
            _niceness(answer.get("niceness")),
            Text(answer.get("tool", "")),
        )
    return table
