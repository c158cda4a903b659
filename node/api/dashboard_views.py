"""The dashboard's HTML and SVG, rendered from plain values (no I/O, no node).

Everything that reaches the page passes through :func:`esc`: addresses, URLs,
user agents and event messages come from peers and may hold markup. The
page carries its CSS and script inline (the machines have no internet) and a
Content-Security-Policy that admits only those two blocks by hash, so even a
missed escape could not run a script.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

REFRESH_MS = 3000  # how often the page swaps in a fresh live region
LIVE_PATH = "/dashboard/live"  # the fragment the refresh loop fetches
SHORT_HASH_CHARS = 16  # like the log lines: "block 412 00000a3f…"
TIP_HASH_CHARS = 8  # the height card's line is narrow
ADDRESS_HEAD_CHARS, ADDRESS_TAIL_CHARS = 9, 4  # "gc1qqrzth…hut9"
MAX_PLOT_POINTS = 600  # about one per pixel column of a plot; more only grows every refresh
MAX_DETAILED_MARKS = 100  # rejection marks drawn with their own tooltip (the newest)
DOT_POINTS_MAX = 80  # series with at most this many points also get a dot per point

# Plot geometry in SVG user units (the SVG scales to its card's width).
PLOT_W, PLOT_H = 760, 260  # a plot in a two-thirds card
WIDE_PLOT_W = 1240  # a plot across the page: wider, not taller, so its text keeps its size
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 52, 56, 34, 30
Y_TICKS = 5
TICK_SLACK = 1e-9  # relative tolerance when comparing tick values with a range's ends

ACCURACY_COLOUR = "#2563eb"
LOSS_COLOUR = "#f59e0b"
NAIVE_COLOUR = "#6b7280"
ACTUAL_COLOUR = "#9ca3af"
REJECT_COLOUR = "#dc2626"
GRID_COLOUR = "#e5e7eb"
AXIS_TEXT_COLOUR = "#6b7280"


# -- values the page shows ------------------------------------------------------------------------
@dataclass(frozen=True)
class UpdateView:
    """One gradient update of a block, with the aggregation rule's verdict."""

    txid: str
    sender: str  # full address; shortened when shown
    base_height: int
    encoding: str
    values: int
    fee: int
    norm: float | None  # None when decoding it would be too costly
    accepted: bool | None  # None: not applied (too few updates for the rule), or never connected
    outcome: str = ""  # "accepted", "rejected", "not applied"; "" while the block is not connected


@dataclass(frozen=True)
class TxView:
    position: int
    kind: str  # "coinbase", "transfer", "update", "task"
    txid: str
    size: int
    sender: str | None
    detail: str  # one plain-text line (escaped when shown)
    update: UpdateView | None = None


@dataclass(frozen=True)
class BlockView:
    height: int
    hash: str
    prev: str
    time: int
    bits: str
    nonce: int
    state_root: str
    main_chain: bool
    miner: str | None
    txs: list[TxView]

    @property
    def updates(self) -> list[UpdateView]:
        return [tx.update for tx in self.txs if tx.update is not None]

    @property
    def accepted(self) -> int:
        return sum(1 for u in self.updates if u.accepted)

    @property
    def rejected(self) -> int:
        return sum(1 for u in self.updates if u.accepted is False)


@dataclass(frozen=True)
class PeerView:
    url: str
    height: int
    direction: str
    user_agent: str
    connected_for_s: float


@dataclass(frozen=True)
class EventView:
    time: float
    kind: str
    message: str
    height: int | None


@dataclass(frozen=True)
class Prediction:
    """The tip model's predictions on the test split of a regress task."""

    height: int
    predicted: list[float]
    actual: list[float]
    mse: float
    naive_mse: float
    mae: float
    naive_mae: float
    test_days: int  # the figures cover all of them; the plot draws the last len(actual)


@dataclass(frozen=True)
class PageView:
    """Everything the live region shows, gathered once per request."""

    network: str
    task: str
    head: str  # "classify" or "regress"
    rule: str
    f: int
    height: int
    tip_hash: str
    model_version: int
    mining: bool
    hashrate: float
    training: bool
    mempool: int
    syncing: bool
    url: str
    uptime_s: float
    now: float
    blocks: list[BlockView]
    peers: list[PeerView]
    events: list[EventView]
    history: Mapping[int, Mapping[str, float]]
    rejected: Mapping[int, int]  # height -> updates the rule rejected there
    prediction: Prediction | None = None
    banned: int = 0
    known: int = 0
    extra: dict[str, str] = field(default_factory=dict)


# -- small formatters ---------------------------------------------------------------------------
def esc(value: object) -> str:
    """Text made safe for HTML element content and quoted attributes."""
    return html.escape(str(value), quote=True)


def short_hash(hex_hash: str) -> str:
    return hex_hash[:SHORT_HASH_CHARS] + "…"


def short_address(address: str) -> str:
    if len(address) <= ADDRESS_HEAD_CHARS + ADDRESS_TAIL_CHARS + 1:
        return address
    return f"{address[:ADDRESS_HEAD_CHARS]}…{address[-ADDRESS_TAIL_CHARS:]}"


def address_html(address: str | None) -> str:
    if not address:
        return '<span class="muted">—</span>'
    return f'<span class="mono" title="{esc(address)}">{esc(short_address(address))}</span>'


def age(seconds: float) -> str:
    """'12 s', '4 min', '3 h', '2 d': how long ago, coarse on purpose."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit}"
    return f"{s} s"


def utc_clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def utc_datetime(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def hashrate_text(hashes_per_s: float) -> str:
    for unit, size in (("GH/s", 1e9), ("MH/s", 1e6), ("kH/s", 1e3)):
        if hashes_per_s >= size:
            return f"{hashes_per_s / size:.2f} {unit}"
    return f"{hashes_per_s:.0f} H/s"


def number(value: float, digits: int = 4) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


def outcome_badge(accepted: bool | None, outcome: str = "") -> str:
    if accepted is None:
        if outcome == "not applied":
            return '<span class="badge off" title="too few updates for the rule\'s Byzantine bound">not applied</span>'
        return '<span class="badge off">not connected</span>'
    if accepted:
        return '<span class="badge ok">accepted</span>'
    return '<span class="badge bad">rejected</span>'


# -- SVG plots --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Axis:
    """A linear map from data values [lo, hi] to pixels [p0, p1]."""

    lo: float
    hi: float
    p0: float
    p1: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        frac = (value - self.lo) / span if span else 0.5
        return self.p0 + frac * (self.p1 - self.p0)


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float]]
    colour: str
    axis: str = "left"  # "left" or "right"
    dashed: bool = False
    stroke_width: float = 2.0


def nice_ticks(lo: float, hi: float, count: int = Y_TICKS) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + TICK_SLACK) * step
    ticks = [round(first, 12)]
    while ticks[-1] < hi - step * TICK_SLACK:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def _inside(ticks: Iterable[float], axis: Axis) -> list[float]:
    """The ticks an axis can draw: those within its data range."""
    slack = (axis.hi - axis.lo) * TICK_SLACK
    return [t for t in ticks if axis.lo - slack <= t <= axis.hi + slack]


def _upper_bound(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite, default=1.0)
    return nice_ticks(0.0, top)[-1] if top > 0 else 1.0


def _tick_label(value: float, percent: bool) -> str:
    return f"{value * 100:.0f}%" if percent else f"{value:.3g}"


def _polyline(points: Sequence[tuple[float, float]], x: Axis, y: Axis, series: Series) -> str:
    coords = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in points if math.isfinite(py))
    dash = ' stroke-dasharray="6 4"' if series.dashed else ""
    out = [
        f'<polyline class="series" data-series="{esc(series.label)}" points="{coords}" fill="none" '
        f'stroke="{series.colour}" stroke-width="{series.stroke_width}" stroke-linejoin="round"{dash}/>'
    ]
    if len(points) <= DOT_POINTS_MAX:
        for px, py in points:
            if math.isfinite(py):
                out.append(
                    f'<circle cx="{x(px):.1f}" cy="{y(py):.1f}" r="2.6" fill="{series.colour}">'
                    f"<title>{esc(series.label)} at {esc(_fmt_x(px))}: {esc(number(py))}</title></circle>"
                )
    return "".join(out)


def _fmt_x(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _legend(series: Sequence[Series], extra: Sequence[tuple[str, str]] = ()) -> str:
    out, cursor = [], float(PAD_LEFT)
    for s in series:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(
            f'<line x1="{cursor:.0f}" y1="14" x2="{cursor + 18:.0f}" y2="14" stroke="{s.colour}" '
            f'stroke-width="3"{dash}/><text x="{cursor + 24:.0f}" y="18" font-size="12" '
            f'fill="#374151">{esc(s.label)}</text>'
        )
        cursor += 36 + 7 * len(s.label)
    for label, colour in extra:
        out.append(
            f'<path d="M{cursor:.0f} 9 h12 l-6 9 z" fill="{colour}"/><text x="{cursor + 18:.0f}" y="18" '
            f'font-size="12" fill="#374151">{esc(label)}</text>'
        )
        cursor += 30 + 7 * len(label)
    return "".join(out)


def _frame(
    x: Axis, left: Axis, right: Axis | None, left_percent: bool, x_label: str, colours: tuple[str, str] = ("", "")
) -> str:
    """Grid, axes and tick labels of a plot.

    A right axis labels the same grid lines as the left one (its values at
    those heights), so every line reads on both scales; ``colours`` tints each
    side's labels like its series.
    """
    left_colour = colours[0] or AXIS_TEXT_COLOUR
    out = []
    left_ticks = _inside(nice_ticks(left.lo, left.hi), left)
    grid = " ".join(f"M{PAD_LEFT} {left(t):.1f} H{x.p1}" for t in left_ticks)
    out.append(f'<path class="grid" d="{grid}" stroke="{GRID_COLOUR}" stroke-width="1"/>')
    for t in left_ticks:
        out.append(
            f'<text x="{PAD_LEFT - 6}" y="{left(t) + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="{left_colour}">{esc(_tick_label(t, left_percent))}</text>'
        )
    if right is not None:
        for t in left_ticks:
            frac = (t - left.lo) / (left.hi - left.lo) if left.hi > left.lo else 0.0
            value = right.lo + frac * (right.hi - right.lo)
            out.append(
                f'<text x="{x.p1 + 6}" y="{left(t) + 4:.1f}" font-size="11" '
                f'fill="{colours[1] or AXIS_TEXT_COLOUR}">{esc(_tick_label(value, False))}</text>'
            )
    for t in _x_ticks(x.lo, x.hi):
        out.append(
            f'<text x="{x(t):.1f}" y="{PLOT_H - PAD_BOTTOM + 16}" font-size="11" text-anchor="middle" '
            f'fill="{AXIS_TEXT_COLOUR}">{esc(_fmt_x(t))}</text>'
        )
    out.append(
        f'<path d="M{PAD_LEFT} {PLOT_H - PAD_BOTTOM} H{x.p1}" stroke="#9ca3af" stroke-width="1"/>'
        f'<text x="{x.p1}" y="{PLOT_H - 2}" font-size="11" text-anchor="end" '
        f'fill="{AXIS_TEXT_COLOUR}">{esc(x_label)}</text>'
    )
    return "".join(out)


def _x_ticks(lo: float, hi: float) -> list[float]:
    ticks = [t for t in nice_ticks(lo, hi, 7) if lo <= t <= hi and float(t).is_integer()]
    return ticks or [lo]


def _svg(body: str, label: str, css_class: str, width: int) -> str:
    return (
        f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {PLOT_H}" '
        f'role="img" aria-label="{esc(label)}" font-family="system-ui, sans-serif">{body}</svg>'
    )


def _x_axis(lo: float, hi: float, width: int) -> Axis:
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    return Axis(lo, hi, PAD_LEFT, width - PAD_RIGHT)


def _y_axis(lo: float, hi: float) -> Axis:
    return Axis(lo, hi, PLOT_H - PAD_BOTTOM, PAD_TOP)


def _reject_marks(rejected: Mapping[int, int], x: Axis) -> str:
    """A red dashed line and triangle per height where the rule rejected updates.

    The newest :data:`MAX_DETAILED_MARKS` get their own group with a tooltip;
    older ones share one path, so a long attack cannot bloat every refresh.
    """
    marked = [(h, c) for h, c in sorted(rejected.items()) if c > 0 and x.lo <= h <= x.hi]
    older, detailed = marked[:-MAX_DETAILED_MARKS], marked[-MAX_DETAILED_MARKS:]
    line = f'stroke="{REJECT_COLOUR}" stroke-width="1.5" stroke-dasharray="3 3" opacity="0.7"'
    out = []
    if older:
        d = " ".join(f"M{x(h):.1f} {PAD_TOP} V{PLOT_H - PAD_BOTTOM}" for h, _ in older)
        out.append(
            f'<g class="rejected-older"><title>{len(older)} older height(s) with rejected updates</title>'
            f'<path d="{d}" {line}/></g>'
        )
    for height, count in detailed:
        px = x(height)
        out.append(
            f'<g class="rejected" data-height="{height}"><title>height {height}: {count} update(s) '
            f"rejected by the aggregation rule</title>"
            f'<path d="M{px:.1f} {PAD_TOP} V{PLOT_H - PAD_BOTTOM}" {line}/>'
            f'<path d="M{px - 5:.1f} {PAD_TOP - 8} h10 l-5 8 z" fill="{REJECT_COLOUR}"/></g>'
        )
    return "".join(out)


def thin(values: Sequence[int], limit: int) -> list[int]:
    """At most ``limit`` evenly spaced items of ``values``, always keeping the first and last."""
    n = len(values)
    if n <= limit:
        return list(values)
    picks = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [values[i] for i in picks]


def history_svg(
    history: Mapping[int, Mapping[str, float]],
    rejected: Mapping[int, int],
    head: str,
    tip: int,
    width: int = PLOT_W,
) -> str:
    """Model quality per height, with the heights where the rule rejected updates marked.

    Classify: accuracy (left axis, percent) and loss (right axis). Regress:
    test MSE against the "tomorrow = today" baseline, one axis.
    """
    heights = thin(sorted(history), MAX_PLOT_POINTS)
    lo = float(min(heights[0] if heights else tip, min(rejected, default=tip)))
    x = _x_axis(lo, float(max(tip, heights[-1] if heights else tip)), width)
    body: list[str] = []
    if head == "classify":
        acc = Series("accuracy", [(h, history[h].get("accuracy", math.nan)) for h in heights], ACCURACY_COLOUR)
        loss = Series("loss", [(h, history[h].get("loss", math.nan)) for h in heights], LOSS_COLOUR, "right")
        left = _y_axis(0.0, 1.0)
        right = _y_axis(0.0, _upper_bound(v for _, v in loss.points))
        body.append(_frame(x, left, right, True, "height", (ACCURACY_COLOUR, LOSS_COLOUR)))
        series, axes = [acc, loss], {"left": left, "right": right}
    else:
        mse = Series("test MSE", [(h, history[h].get("mse", math.nan)) for h in heights], ACCURACY_COLOUR)
        naive = Series(
            "naive MSE (tomorrow = today)",
            [(h, history[h].get("naive_mse", math.nan)) for h in heights],
            NAIVE_COLOUR,
            dashed=True,
        )
        left = _y_axis(0.0, _upper_bound([v for _, v in mse.points] + [v for _, v in naive.points]))
        body.append(_frame(x, left, None, False, "height"))
        series, axes = [naive, mse], {"left": left}
    body.append(_reject_marks(rejected, x))
    for s in series:
        body.append(_polyline(s.points, x, axes[s.axis], s))
    marks = [("rejected update(s)", REJECT_COLOUR)] if any(c > 0 for c in rejected.values()) else []
    body.append(_legend(series, marks))
    if not heights:
        body.append(
            f'<text x="{width / 2:.0f}" y="{PLOT_H / 2:.0f}" text-anchor="middle" font-size="13" '
            f'fill="{AXIS_TEXT_COLOUR}">waiting for the first evaluation of the model…</text>'
        )
    return _svg("".join(body), "model quality per height", "plot history-plot", width)


def prediction_svg(prediction: Prediction, width: int = WIDE_PLOT_W) -> str:
    """Predicted against actual next-day returns over the test split."""
    n = len(prediction.actual)
    x = _x_axis(0.0, float(max(1, n - 1)), width)
    values = [abs(v) for v in prediction.actual + prediction.predicted if math.isfinite(v)]
    top = _upper_bound(values)
    y = _y_axis(-top, top)
    actual = Series(
        "actual return %", [(float(i), v) for i, v in enumerate(prediction.actual)], ACTUAL_COLOUR, stroke_width=1.5
    )
    predicted = Series(
        "predicted return %", [(float(i), v) for i, v in enumerate(prediction.predicted)], ACCURACY_COLOUR
    )
    body = [_frame(x, y, None, False, "test day")]
    body.append(f'<path d="M{PAD_LEFT} {y(0.0):.1f} H{x.p1:.0f}" stroke="#9ca3af" stroke-width="1"/>')
    body.append(_polyline(actual.points, x, y, actual))
    body.append(_polyline(predicted.points, x, y, predicted))
    body.append(_legend([actual, predicted]))
    return _svg("".join(body), "predicted against actual returns", "plot prediction-plot", width)


# -- page parts -------------------------------------------------------------------------------------
def _stat(label: str, value: str, sub: str = "", value_id: str = "") -> str:
    ident = f' id="{value_id}"' if value_id else ""
    return (
        f'<div class="card stat"><div class="label">{esc(label)}</div>'
        f'<div class="value"{ident}>{esc(value)}</div><div class="sub">{sub}</div></div>'
    )


def _model_stat(view: PageView) -> str:
    latest = view.history.get(max(view.history)) if view.history else None
    if latest is None:
        return _stat("Model", "—", "not evaluated yet")
    if view.head == "classify":
        return _stat(
            "Test accuracy",
            f"{latest.get('accuracy', math.nan) * 100:.1f}%",
            f"loss {esc(number(latest.get('loss', math.nan)))} · v{view.model_version}",
        )
    ratio = latest.get("mse_ratio", math.nan)
    verdict = "beats naive" if ratio < 1 else "worse than naive"
    return _stat("MSE / naive", number(ratio, 3), f"{verdict} · v{view.model_version}")


def stats_row(view: PageView) -> str:
    tip_block = view.blocks[0] if view.blocks else None
    tip_age = f"{age(view.now - tip_block.time)} ago" if tip_block else ""
    mining = (
        _stat("Mining", "on", esc(hashrate_text(view.hashrate)))
        if view.mining
        else _stat("Mining", "off", "on-demand blocks only")
    )
    peers_sub = f"{view.known} known · {view.banned} banned"
    return (
        '<section class="stats">'
        + _stat("Height", str(view.height), f'tip <span class="mono">{esc(view.tip_hash[:TIP_HASH_CHARS])}…</span> · '
                + esc(tip_age), "tip-height-stat")
        + _model_stat(view)
        + mining
        + _stat("Mempool", str(view.mempool), "transactions waiting")
        + _stat("Peers", str(len(view.peers)), esc(peers_sub))
        + _stat("Training", "on" if view.training else "off", f"up {esc(age(view.uptime_s))}")
        + "</section>"
    )


def plot_card(view: PageView) -> str:
    title = "Model accuracy and loss per height" if view.head == "classify" else "Test MSE vs naive per height"
    rejected = sum(view.rejected.values())
    note = (
        f"{rejected} update(s) rejected by {esc(view.rule)} (f={view.f}) — red marks"
        if rejected
        else f"no update rejected by {esc(view.rule)} (f={view.f}) so far"
    )
    return (
        f'<section class="card span-8"><h2>{esc(title)}</h2>'
        f"{history_svg(view.history, view.rejected, view.head, view.height)}"
        f'<p class="note">{note} · {len(view.history)} evaluated height(s)</p></section>'
    )


def prediction_card(prediction: Prediction) -> str:
    ratio = prediction.mse / prediction.naive_mse if prediction.naive_mse > 0 else math.inf
    verdict = "beats" if ratio < 1 else "does not beat"
    return (
        f'<section class="card span-12"><h2>Prediction on the test split at height {prediction.height}</h2>'
        f"{prediction_svg(prediction)}"
        f'<p class="note">model MSE <b>{esc(number(prediction.mse))}</b> vs naive '
        f'<b>{esc(number(prediction.naive_mse))}</b> (ratio {esc(number(ratio, 3))}, the model {verdict} '
        f"tomorrow = today) · MAE {esc(number(prediction.mae))} vs naive {esc(number(prediction.naive_mae))}"
        f" · over {prediction.test_days} test days, the last {len(prediction.actual)} drawn</p></section>"
    )


def events_card(events: Sequence[EventView]) -> str:
    if not events:
        items = '<li class="empty">no events yet</li>'
    else:
        items = "".join(
            f'<li><span class="mono muted">{esc(utc_clock(e.time))}</span> '
            f'<span class="kind kind-{esc(e.kind)}">{esc(e.kind)}</span> {esc(e.message)}</li>'
            for e in events
        )
    return f'<section class="card span-4"><h2>Events</h2><ul class="events">{items}</ul></section>'


def _update_chips(block: BlockView) -> str:
    if not block.updates:
        return '<span class="muted">—</span>'
    chips = []
    if block.accepted:
        chips.append(f'<span class="badge ok">{block.accepted} accepted</span>')
    if block.rejected:
        chips.append(f'<span class="badge bad">{block.rejected} rejected</span>')
    unapplied = sum(1 for u in block.updates if u.outcome == "not applied")
    if unapplied:
        chips.append(f'<span class="badge off">{unapplied} not applied</span>')
    unknown = len(block.updates) - block.accepted - block.rejected - unapplied
    if unknown:
        chips.append(f'<span class="badge off">{unknown} pending</span>')
    return " ".join(chips)


def blocks_card(view: PageView) -> str:
    rows = "".join(
        f'<tr data-height="{b.height}"><td class="num"><a href="/blocks/{b.height}">{b.height}</a></td>'
        f'<td><a class="mono" href="/blocks/{esc(b.hash)}" title="{esc(b.hash)}">{esc(short_hash(b.hash))}</a></td>'
        f"<td>{esc(age(view.now - b.time))} ago</td><td class=\"num\">{len(b.txs)}</td>"
        f"<td>{_update_chips(b)}</td><td>{address_html(b.miner)}</td></tr>"
        for b in view.blocks
    )
    return (
        '<section class="card span-12"><h2>Recent blocks</h2><table id="blocks"><thead><tr>'
        '<th class="num">Height</th><th>Hash</th><th>Age</th><th class="num">Txs</th><th>Updates</th>'
        f"<th>Miner</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def update_rows(updates: Iterable[tuple[int, UpdateView]], with_height: bool) -> str:
    out = []
    for height, u in updates:
        norm = number(u.norm) if u.norm is not None else "—"
        first = f'<td class="num"><a href="/blocks/{height}">{height}</a></td>' if with_height else ""
        out.append(
            f"<tr>{first}<td>{address_html(u.sender)}</td><td class=\"num\">{u.base_height}</td>"
            f"<td class=\"mono\">{esc(u.encoding)}</td><td class=\"num\">{u.values}</td>"
            f"<td class=\"num\">{esc(norm)}</td><td>{outcome_badge(u.accepted, u.outcome)}</td></tr>"
        )
    return "".join(out)


def updates_card(view: PageView) -> str:
    pairs = [(b.height, u) for b in view.blocks for u in b.updates]
    body = update_rows(pairs, True) or '<tr><td colspan="7" class="empty">no updates in recent blocks</td></tr>'
    return (
        '<section class="card span-8"><h2>Updates in recent blocks</h2><table id="updates"><thead><tr>'
        '<th class="num">Block</th><th>Sender</th><th class="num">Base</th><th>Encoding</th>'
        '<th class="num">Values</th><th class="num">Norm</th><th>Rule</th></tr></thead>'
        f"<tbody>{body}</tbody></table></section>"
    )


def peers_card(peers: Sequence[PeerView]) -> str:
    rows = "".join(
        f'<tr><td class="mono">{esc(p.url)}</td><td class="num">{p.height}</td>'
        f'<td><span class="badge off">{esc(p.direction)}</span></td>'
        f'<td class="muted">{esc(p.user_agent)}</td><td>{esc(age(p.connected_for_s))}</td></tr>'
        for p in peers
    )
    if not rows:
        rows = '<tr><td colspan="5" class="empty">no peers connected</td></tr>'
    return (
        '<section class="card span-4"><h2>Peers</h2><table id="peers"><thead><tr><th>URL</th>'
        '<th class="num">Height</th><th>Direction</th><th>Agent</th><th>For</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )


def header(network: str, task: str, height: int | None, subtitle: str = "") -> str:
    """The dark bar on top; ``height`` (live pages only) comes with the live dot."""
    right = (
        f'<div class="tip">height <b id="tip-height">{height}</b>'
        f'<span class="dot" title="live: refreshes every {REFRESH_MS // 1000} s"></span></div>'
        if height is not None
        else ""
    )
    return (
        f'<header><a class="brand" href="/">gradchain</a><span class="pill">{esc(network)}</span>'
        f'<span class="pill task">task {esc(task)}</span><span class="subtitle">{subtitle}</span>'
        f"{right}</header>"
    )


def render_live(view: PageView) -> str:
    """The region the refresh loop swaps: header, cards, tables and plots."""
    sync = '<span class="badge bad">syncing</span>' if view.syncing else ""
    parts = [
        header(view.network, view.task, view.height, f"{esc(view.url)} {sync}"),
        '<main class="grid">',
        stats_row(view),
        plot_card(view),
        events_card(view.events),
    ]
    if view.prediction is not None:
        parts.append(prediction_card(view.prediction))
    parts += [blocks_card(view), updates_card(view), peers_card(view.peers), "</main>"]
    parts.append(
        f'<footer>rendered {esc(utc_datetime(view.now))} · JSON at <a href="/api/status">/api/status</a> · '
        '<a href="/plot.svg">plot.svg</a> · <a href="/metrics">metrics</a></footer>'
    )
    return "".join(parts)


# -- documents ------------------------------------------------------------------------------------
CSS = """
:root{--bg:#f3f5f9;--card:#fff;--ink:#111827;--muted:#6b7280;--line:#e5e7eb;--accent:#2563eb;
--ok:#166534;--okbg:#dcfce7;--bad:#b91c1c;--badbg:#fee2e2}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);
color:var(--ink)}
header{background:#111827;color:#f9fafb;padding:12px 24px;display:flex;align-items:center;gap:12px;
flex-wrap:wrap}
header .brand{font-weight:700;font-size:19px;color:#fff;letter-spacing:.2px;margin-right:6px}
.pill{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;font-weight:600;
background:#1f2937;color:#d1d5db;border:1px solid #374151}
.pill.task{color:#bfdbfe}
header .subtitle{color:#9ca3af;font-size:12px}
header .tip{margin-left:auto;color:#9ca3af;font-size:13px;display:flex;align-items:center;gap:6px}
header .tip b{font-size:22px;color:#fff}
.dot{width:9px;height:9px;border-radius:50%;background:#22c55e;box-shadow:0 0 0 3px rgba(34,197,94,.25);
margin-left:6px}
body.stale .dot{background:#ef4444;box-shadow:0 0 0 3px rgba(239,68,68,.25)}
main{max-width:1320px;margin:0 auto;padding:18px 24px;display:grid;gap:16px;
grid-template-columns:repeat(12,minmax(0,1fr))}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;
box-shadow:0 1px 2px rgba(16,24,40,.05);min-width:0}
.span-12{grid-column:span 12}.span-8{grid-column:span 8}.span-4{grid-column:span 4}
.stats{grid-column:span 12;display:grid;grid-template-columns:repeat(6,minmax(0,1fr));gap:16px}
.stat .label{color:var(--muted);font-size:11px;text-transform:uppercase;letter-spacing:.6px;font-weight:600}
.stat .value{font-size:26px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.stat .sub{color:var(--muted);font-size:12px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
h2{font-size:12px;margin:0 0 10px;text-transform:uppercase;letter-spacing:.6px;color:var(--muted);
font-weight:650}
table{width:100%;border-collapse:collapse;font-size:13px}
th{text-align:left;font-weight:600;color:var(--muted);border-bottom:1px solid var(--line);padding:6px 8px;
font-size:12px}
td{border-bottom:1px solid #f1f5f9;padding:6px 8px;vertical-align:top}
tbody tr:last-child td{border-bottom:0}
tbody tr:hover td{background:#f9fafb}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:var(--muted)}
.badge{display:inline-block;border-radius:6px;padding:1px 7px;font-size:12px;font-weight:600;white-space:nowrap}
.ok{background:var(--okbg);color:var(--ok)}.bad{background:var(--badbg);color:var(--bad)}
.off{background:#f3f4f6;color:#4b5563}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
svg.plot{width:100%;height:auto;display:block}
.note{color:var(--muted);font-size:12px;margin:8px 0 0}
.events{list-style:none;margin:0;padding:0;max-height:300px;overflow:auto;font-size:12.5px}
.events li{padding:5px 0;border-bottom:1px solid #f1f5f9;overflow-wrap:anywhere}
.kind{display:inline-block;min-width:52px;font-size:11px;font-weight:600;color:#374151;
background:#f3f4f6;border-radius:4px;padding:0 5px;text-align:center}
.kind-mined,.kind-block{background:#dbeafe;color:#1e40af}.kind-rejected{background:var(--badbg);
color:var(--bad)}.kind-update{background:var(--okbg);color:var(--ok)}.kind-reorg{background:#fef3c7;
color:#92400e}
.empty{color:var(--muted);font-style:italic}
dl.fields{display:grid;grid-template-columns:max-content 1fr;gap:6px 18px;margin:0}
dl.fields dt{color:var(--muted)}dl.fields dd{margin:0;overflow-wrap:anywhere}
footer{max-width:1320px;margin:0 auto;padding:0 24px 24px;color:var(--muted);font-size:12px}
@media (max-width:1000px){.span-8,.span-4{grid-column:span 12}.stats{grid-template-columns:repeat(3,1fr)}}
"""

SCRIPT = (
    "(()=>{const b=document.body,ms=+b.dataset.refresh,url=b.dataset.live;"
    "const tick=async()=>{try{const r=await fetch(url,{cache:'no-store'});"
    "if(!r.ok)throw new Error(String(r.status));"
    "document.getElementById('live').innerHTML=await r.text();b.classList.remove('stale')}"
    "catch(e){b.classList.add('stale')}setTimeout(tick,ms)};setTimeout(tick,ms)})();"
)


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


# Only our own style block and script may run; the refresh loop fetches from this origin only.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {_csp_hash(CSS)}; script-src {_csp_hash(SCRIPT)}; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def document(title: str, body: str, *, live: bool) -> str:
    """A whole page; ``live`` pages wrap ``body`` in the region the script refreshes."""
    script = f"<script>{SCRIPT}</script>" if live else ""
    attrs = f' data-refresh="{REFRESH_MS}" data-live="{esc(LIVE_PATH)}"' if live else ""
    content = f'<div id="live">{body}</div>' if live else body
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body{attrs}>{content}{script}</body></html>"
    )


def render_page(view: PageView) -> str:
    return document(f"gradchain {view.network} · height {view.height}", render_live(view), live=True)


def _tx_row(tx: TxView) -> str:
    outcome = outcome_badge(tx.update.accepted, tx.update.outcome) if tx.update is not None else ""
    return (
        f'<tr><td class="num">{tx.position}</td><td><span class="badge off">{esc(tx.kind)}</span></td>'
        f'<td class="mono" title="{esc(tx.txid)}">{esc(short_hash(tx.txid))}</td>'
        f"<td>{address_html(tx.sender)}</td><td>{esc(tx.detail)}</td>"
        f'<td class="num">{tx.size}</td><td>{outcome}</td></tr>'
    )


def render_block_page(block: BlockView, network: str, task: str, tip: int) -> str:
    """The explorer page of one block: its header fields, its txs, its updates' outcomes."""
    prev = (
        f'<a class="mono" href="/blocks/{esc(block.prev)}">{esc(block.prev)}</a>'
        if block.height > 0
        else '<span class="muted">none (genesis)</span>'
    )
    nav = []
    if block.height > 0:
        nav.append(f'<a href="/blocks/{block.height - 1}">← {block.height - 1}</a>')
    if block.height < tip:
        nav.append(f'<a href="/blocks/{block.height + 1}">{block.height + 1} →</a>')
    chain_badge = (
        '<span class="badge ok">main chain</span>' if block.main_chain else '<span class="badge off">side branch</span>'
    )
    fields = [
        ("Hash", f'<span class="mono">{esc(block.hash)}</span>'),
        ("Previous", prev),
        ("Time", esc(utc_datetime(block.time))),
        ("Bits · nonce", f'<span class="mono">{esc(block.bits)}</span> · {block.nonce}'),
        ("State root", f'<span class="mono">{esc(block.state_root)}</span>'),
        ("Miner", address_html(block.miner)),
        ("Status", chain_badge),
    ]
    dl = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in fields)
    txs = "".join(_tx_row(tx) for tx in block.txs)
    updates = update_rows(((block.height, u) for u in block.updates), False)
    update_table = (
        '<section class="card span-12"><h2>Gradient updates and the rule\'s verdict</h2><table id="block-updates">'
        '<thead><tr><th>Sender</th><th class="num">Base</th><th>Encoding</th><th class="num">Values</th>'
        f'<th class="num">Norm</th><th>Rule</th></tr></thead><tbody>{updates}</tbody></table></section>'
        if block.updates
        else ""
    )
    body = (
        header(network, task, None, f"block {block.height}")
        + '<main class="grid">'
        + f'<section class="card span-12"><h2>Block {block.height} · {" · ".join(nav)} · '
        f'<a href="/">dashboard</a></h2><dl class="fields">{dl}</dl></section>'
        + update_table
        + '<section class="card span-12"><h2>Transactions</h2><table id="txs"><thead><tr><th class="num">#</th>'
        '<th>Type</th><th>Txid</th><th>From</th><th>Details</th><th class="num">Bytes</th><th>Rule</th></tr>'
        f"</thead><tbody>{txs}</tbody></table></section></main>"
    )
    return document(f"gradchain block {block.height}", body, live=False)


def render_error_page(status: int, message: str, network: str, task: str) -> str:
    body = (
        header(network, task, None, f"error {status}")
        + f'<main class="grid"><section class="card span-12"><h2>{status}</h2><p>{esc(message)}</p>'
        '<p><a href="/">back to the dashboard</a></p></section></main>'
    )
    return document(f"gradchain error {status}", body, live=False)
