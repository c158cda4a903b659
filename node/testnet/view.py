"""The live terminal view of a testnet: one row per node, refreshed every second."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from node.client import ApiError, NodeClient
from node.testnet.launcher import NodeEntry, is_alive

POLL_TIMEOUT_S = 2.0  # a node that does not answer within this shows as "starting"


@dataclass
class NodeView:
    entry: NodeEntry
    status: dict[str, Any] | None = None
    accuracy: str = "…"
    last_event: str = ""
    error: str = ""


def poll(entry: NodeEntry) -> NodeView:
    view = NodeView(entry)
    if not is_alive(entry.pid):
        view.error = "stopped"
        return view
    client = NodeClient(entry.api, timeout=POLL_TIMEOUT_S)
    try:
        view.status = client.status()
        events = client._json("GET", "/api/events?count=1")
        view.last_event = events[0]["message"] if events else ""
        latest = client._json("GET", "/api/model/summary")
        view.accuracy = latest.get("label", "…")
    except ApiError as exc:
        view.error = "starting…" if exc.status == 0 else exc.message[:40]
    return view


def render(views: list[NodeView], started: float) -> Group:
    table = Table(title=f"gradchain testnet — {int(time.time() - started)}s", expand=True)
    for column, justify in (("node", "left"), ("height", "right"), ("tip", "left"), ("peers", "right"),
                            ("hashrate", "right"), ("mempool", "right"), ("model", "right"), ("last event", "left")):
        table.add_column(column, justify=justify, no_wrap=column != "last event")  # type: ignore[arg-type]
    for v in views:
        name = v.entry.name + (" [red](attacker)[/red]" if v.entry.attacker else "")
        s = v.status
        if s is None:
            table.add_row(name, "-", "-", "-", "-", "-", "-", Text(v.error, style="yellow"))
            continue
        table.add_row(
            name, str(s["height"]), s["tip"][:12] + "…", str(s["peers"]),
            f"{s['hashrate'] / 1e6:.1f} MH/s", str(s["mempool"]), v.accuracy, v.last_event[:70],
        )
    links = Text("dashboards: " + "  ".join(f"{v.entry.name} {v.entry.api}/" for v in views), style="cyan")
    hint = Text("Ctrl-C stops every node", style="dim")
    return Group(table, links, hint)


def render_plain(views: list[NodeView]) -> str:
    lines = []
    for v in views:
        s = v.status
        if s is None:
            lines.append(f"{v.entry.name:<8} {v.error}")
        else:
            lines.append(f"{v.entry.name:<8} height {s['height']:<5} peers {s['peers']} "
                         f"model {v.accuracy:<14} {v.entry.api}/")
    return "\n".join(lines)
