"""The dashboard's HTML and SVG: view models rendered through autoescaped Jinja2 templates.

Escaping is by construction: every template is autoescaped, so an address,
URL, user agent, task name or event message (peers and users control them)
reaches the page as text whatever it holds. The only text inserted as-is is
our own style sheet and script from ``static/``, which each page inlines (the
machines may have no internet) and the Content-Security-Policy admits by hash,
so even markup that got through could not run a script or load a style.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from node.api import plot
from node.api.dashboard_views import BlockPageView, ErrorView, PageView

REFRESH_MS = 3000  # how often the page swaps in a fresh live region
LIVE_PATH = "/dashboard/live"  # the fragment the refresh loop fetches
SHORT_HASH_CHARS = 16  # like the log lines: "block 412 00000a3f…"
TIP_HASH_CHARS = 8  # the height card's line is narrow
ADDRESS_HEAD_CHARS, ADDRESS_TAIL_CHARS = 9, 4  # "gc1qqrzth…hut9"
DASH = "—"  # shown for a value that is missing or not a number


# -- text for people ------------------------------------------------------------------------------
def short_hash(hex_hash: str) -> str:
    return hex_hash[:SHORT_HASH_CHARS] + "…"


def short_address(address: str) -> str:
    if len(address) <= ADDRESS_HEAD_CHARS + ADDRESS_TAIL_CHARS + 1:
        return address
    return f"{address[:ADDRESS_HEAD_CHARS]}…{address[-ADDRESS_TAIL_CHARS:]}"


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


def number(value: float | None, digits: int = 4) -> str:
    """Four significant digits; a dash for a missing value, NaN or infinity."""
    return DASH if value is None else plot.number(value, digits)


def percent(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    return f"{value * 100:.1f}%"


def pixels(value: float) -> str:
    """An SVG coordinate: a tenth of a user unit is finer than a screen pixel."""
    return f"{value:.1f}"


# Path data and point lists are numbers only, so they are formatted here in one go
# (a template loop per point made a long series' plot four times slower).
def polyline_points(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def horizontal_lines(ys: Sequence[float], x0: float, x1: float) -> str:
    return " ".join(f"M{x0:.1f} {y:.1f} H{x1:.1f}" for y in ys)


def vertical_lines(xs: Sequence[float], y0: float, y1: float) -> str:
    return " ".join(f"M{x:.1f} {y0:.1f} V{y1:.1f}" for x in xs)


# -- static assets and the policy that admits them ------------------------------------------------
@dataclass(frozen=True)
class Assets:
    """The page's own style sheet and script, inlined into every page."""

    css: str
    script: str

    @classmethod
    def load(cls) -> Assets:
        static = resources.files("node.api") / "static"
        return cls((static / "dashboard.css").read_text("utf-8"), (static / "dashboard.js").read_text("utf-8"))


def csp_hash(text: str) -> str:
    """The CSP source expression that admits exactly this inline block."""
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


ASSETS = Assets.load()

# Only our own style block and script may run; the refresh loop fetches from this origin only.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {csp_hash(ASSETS.css)}; script-src {csp_hash(ASSETS.script)}; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


# -- the templates ----------------------------------------------------------------------------------
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("node.api", "templates"),
        autoescape=True,  # every template: HTML and SVG alike
        undefined=StrictUndefined,  # a misspelt name fails the render instead of showing nothing
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # package files: no need to stat each template on every render
    )
    env.filters.update(
        short_hash=short_hash, short_address=short_address, age=age, clock=utc_clock, utc=utc_datetime,
        hashrate=hashrate_text, number=number, percent=percent, px=pixels, points=polyline_points,
        hlines=horizontal_lines, vlines=vertical_lines,
    )
    env.globals.update(
        palette=plot.PALETTE,
        refresh_ms=REFRESH_MS,
        live_path=LIVE_PATH,
        tip_hash_chars=TIP_HASH_CHARS,
        # Our own files, trusted as they are: the CSP pins their hashes.
        css=Markup(ASSETS.css),
        script=Markup(ASSETS.script),
    )
    return env


TEMPLATES = _environment()


def render_live(view: PageView) -> str:
    """The region the refresh loop swaps: header, cards, tables and plots."""
    return TEMPLATES.get_template("live.html").render(view=view)


def render_page(view: PageView) -> str:
    """The whole dashboard: the live region in its page, with the refresh script."""
    return TEMPLATES.get_template("page.html").render(view=view)


def render_block_page(page: BlockPageView) -> str:
    """The explorer page of one block: its header fields, its txs, its updates' outcomes."""
    return TEMPLATES.get_template("block.html").render(page=page)


def render_error_page(error: ErrorView) -> str:
    return TEMPLATES.get_template("error.html").render(error=error)


def render_figure(figure: plot.Figure) -> str:
    """A plot as a standalone SVG document."""
    return TEMPLATES.get_template("figure.svg").render(fig=figure)
