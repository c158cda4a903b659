"""The dashboard at / follows a live regtest node, escapes what peers send, and marks rejections.

Each scenario starts a real node in this process with its trainer on and its
miner off, mines blocks on demand (waiting for the trainer's update to reach
the mempool first, so blocks carry updates), and reads the HTML over HTTP
like a browser would. The pure rendering functions are checked with values.
"""

from __future__ import annotations

import dataclasses
import re

import aiohttp
import numpy as np
from markupsafe import escape

from consensus.header import hash_hex
from node.api import dashboard_render as render
from node.api import dashboard_views as views
from node.api import plot
from node.api.status import StatusSnapshot
from node.p2p import messages as m
from node.service import Node
from tests.chainbuilder import key
from tests.node.contrib import commit, join, mine_settled, next_round, reveals, submit
from tests.node.harness import Cluster, FakePeer, connect, get_json, http, mine, scenario

UPDATE_TIMEOUT_S = 20.0  # one local training run of the trainer, on a loaded 2-core box
TIP_HEIGHT = re.compile(r'id="tip-height">(\d+)<')
HOSTILE_AGENT = "<script>alert(1)</script><img src=x onerror=alert(2)>"  # printable, within the 64-char cap


class HostileAgentPeer(FakePeer):
    """A peer that announces markup as its user agent (the handshake accepts any printable text)."""

    def hello(self, session: bytes | None = None) -> m.Handshake:
        return dataclasses.replace(super().hello(session), user_agent=HOSTILE_AGENT)


async def mine_with_updates(node: Node, blocks: int) -> list[int]:
    """Mine until ``blocks`` blocks carry the trainer's update; returns those blocks' heights."""
    with_updates: list[int] = []
    while len(with_updates) < blocks:
        if await mine_settled(node, UPDATE_TIMEOUT_S):
            with_updates.append(node.chain.height)
    return with_updates


async def fetch(session: aiohttp.ClientSession, url: str, status: int = 200) -> tuple[str, aiohttp.ClientResponse]:
    async with session.get(url) as resp:
        text = await resp.text()
        assert resp.status == status, f"{url}: {resp.status} {text[:200]}"
        return text, resp


def shown_height(page: str) -> int:
    match = TIP_HEIGHT.search(page)
    assert match is not None, "the header shows no height"
    return int(match.group(1))


@scenario
async def test_page_shows_tables_plot_peers_and_follows_new_blocks(cluster: Cluster) -> None:
    node = await cluster.start("a", train=True, mine=False, byzantine_f=0)
    other = await cluster.start("b", byzantine_f=0)  # the same task, so the same genesis
    await connect(node, other)
    await mine_with_updates(node, 2)
    tip = node.chain.height
    async with http() as session:
        page, resp = await fetch(session, node.url + "/")
        assert resp.content_type == "text/html"
        assert "script-src 'sha256-" in resp.headers["Content-Security-Policy"]
        assert shown_height(page) == tip
        for table in ('id="blocks"', 'id="updates"', 'id="peers"'):
            assert table in page
        assert re.search(r'<svg class="plot history-plot"[^>]*>.*<polyline[^>]+data-series="accuracy"', page, re.S)
        assert 'data-series="loss"' in page
        assert other.url in page, "the peers table lists the connected peer"
        for height in range(tip - 3, tip + 1):
            assert f'<tr data-height="{height}">' in page
        assert page.count('<span class="badge ok">accepted</span>') >= 2, "the last two blocks carry accepted updates"

        before = node.chain.height
        [new_hash] = await mine(node, 1)
        live, _ = await fetch(session, node.url + "/dashboard/live")
        assert not live.startswith("<!doctype"), "the live fragment has no page shell"
        assert shown_height(live) == before + 1
        assert f'href="/blocks/{hash_hex(new_hash)}"' in live


@scenario
async def test_values_from_peers_are_escaped(cluster: Cluster) -> None:
    node = await cluster.start("a", train=True, mine=False, byzantine_f=0)
    hostile = "<script>alert('pwned')</script> & <img src=x onerror=alert(1)>"
    node.event("peer", hostile)
    async with http() as session:
        page, _ = await fetch(session, node.url + "/")
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script>alert" not in page and "<img" not in page
    assert page.count("<script>") == 1, "only the page's own refresh script"


@scenario
async def test_a_peers_user_agent_reaches_the_page_as_text(cluster: Cluster) -> None:
    """A handshaken peer names itself with markup; the peers table shows it escaped.

    ::

        hostile peer (user agent "<script>…") --handshake--> a --GET /--> a browser
    """
    node = await cluster.start("a")
    async with HostileAgentPeer(node) as peer, http() as session:
        assert await peer.handshake(session) == 200
        page, _ = await fetch(session, node.url + "/")
    peers = page.split('id="peers"')[1].split("</table>")[0]
    assert str(escape(HOSTILE_AGENT)) in peers and peer.url in peers
    assert "<img" not in page and page.count("<script>") == 1, "only the page's own refresh script"


@scenario
async def test_the_page_and_api_status_show_one_snapshot(cluster: Cluster) -> None:
    """/api/status and the dashboard's cards render the same status snapshot.

    ::

        a - b      a mines 2: both say height 2, tip …, 1 peer, not mining
    """
    a, b = await cluster.start_many(2)
    await connect(a, b)
    await mine(a, 2)
    async with http() as session:
        code, status = await get_json(session, a.url + "/api/status")
        page, _ = await fetch(session, a.url + "/")
    assert code == 200 and status["height"] == shown_height(page) == 2
    assert f'tip <span class="mono">{status["tip"][:8]}…</span>' in page
    assert f'>{status["peers"]}</div><div class="sub">{status["known_peers"]} known · ' in page
    assert (status["rule"], status["f"], status["head"]) == (a.chain.task.rule, a.chain.task.f, "classify")
    assert f"by {status['rule']} (f={status['f']})" in page
    assert status["mining"] is False and "on-demand blocks only" in page


@scenario
async def test_block_page_lists_txs_and_each_update_verdict(cluster: Cluster) -> None:
    node = await cluster.start("a", train=True, mine=False, byzantine_f=0)
    (height,) = await mine_with_updates(node, 1)
    block_hash = hash_hex(node.chain.hash_at(height) or b"")
    async with http() as session:
        by_height, _ = await fetch(session, node.url + f"/blocks/{height}")
        by_hash, _ = await fetch(session, node.url + f"/blocks/{block_hash}")
        missing, _ = await fetch(session, node.url + "/blocks/999", 404)
        malformed, _ = await fetch(session, node.url + "/blocks/not-a-hash", 400)
    assert by_height == by_hash
    assert block_hash in by_height and 'id="txs"' in by_height
    assert ">coinbase<" in by_height and ">update<" in by_height
    updates = by_height.split('id="block-updates"')[1].split("</table>")[0]
    assert '<span class="badge ok">accepted</span>' in updates
    assert ">f32<" in updates and "norm" not in updates.split("<tbody>")[1], "the norm is a number"
    previous = height - 1
    assert f'href="/blocks/{previous}"' in by_height
    assert 'href="/blocks/' + hash_hex(node.chain.hash_at(previous) or b"") in by_height
    assert "no block 999" in missing and "64-digit" in malformed


@scenario
async def test_updates_the_rule_rejects_are_marked_on_the_plot(cluster: Cluster) -> None:
    """Median (f=1) drops a sign-flipped update; a block too small for the rule votes zero:

    ... - b (3 honest + 1 flipped: 1 rejected) - b+1 (1 update: not applied)
    """
    node = await cluster.start("a", train=False, mine=False)
    rng = np.random.default_rng(3)
    direction = (0.05 * rng.standard_normal(node.chain.task.param_count)).astype(np.float32)
    vectors = [(direction + 0.01 * rng.standard_normal(direction.size)).astype(np.float32) for _ in range(3)]
    vectors.append((-direction).astype(np.float32))
    senders = [key(20 + i) for i in range(4)]
    lone = key(30)
    await join(node, [*senders, lone])
    plans = {k: [v] for k, v in zip(senders, vectors, strict=True)}
    contributors = await commit(node, {**plans, lone: [vectors[0] * np.float32(0.5)]})
    await next_round(node)
    lone_reveal = [r for r in reveals(node, contributors) if r.sender == lone.public]
    await submit(node, [r for r in reveals(node, contributors) if r.sender != lone.public])
    await mine(node, 1)
    b = node.chain.height
    await submit(node, lone_reveal)
    await mine(node, 1)
    async with http() as session:
        page, _ = await fetch(session, node.url + "/")
        svg, resp = await fetch(session, node.url + "/plot.svg")
    assert resp.content_type == "image/svg+xml"
    for doc in (page, svg):
        assert f'<g class="rejected" data-height="{b}">' in doc
        assert f'class="rejected" data-height="{b + 1}"' not in doc, "an update the rule never ran on is not rejected"
    assert '<span class="badge bad">1 rejected</span>' in page
    assert '<span class="badge ok">3 accepted</span>' in page
    assert "1 not applied</span>" in page
    assert "1 update(s) rejected by meamed" in page


@scenario
async def test_stock_task_plots_mse_against_naive_and_the_prediction(cluster: Cluster) -> None:
    node = await cluster.start("a", task="stock", train=True, mine=False, byzantine_f=0)
    await mine_with_updates(node, 2)
    async with http() as session:
        page, _ = await fetch(session, node.url + "/")
    assert 'data-series="test MSE"' in page and 'data-series="naive MSE (tomorrow = today)"' in page
    assert '<svg class="plot prediction-plot"' in page
    assert 'data-series="predicted return %"' in page and 'data-series="actual return %"' in page
    assert re.search(r"model MSE <b>[0-9.e+-]+</b> vs naive <b>[0-9.e+-]+</b>", page)
    assert "MSE / naive" in page


# -- rendering with values ----------------------------------------------------------------------------
def status(**overrides: object) -> StatusSnapshot:
    base = StatusSnapshot(
        chain_id=1, genesis="ef" * 32, network="regtest", task="digits", task_id="12" * 32, head="classify",
        rule="median", f=1, height=7, round=0, round_blocks=8, tip="ab" * 32, state_root="cd" * 32, model_version=7,
        peers=0, known_peers=0, banned_peers=0, mining=True,
        hashrate=1.5e6, mempool=2, syncing=False, url="http://127.0.0.1:1", training=True, uptime_s=90,
        taken_at=1_000_000.0,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def page_view(**overrides: object) -> views.PageView:
    base = views.PageView(
        status=status(), blocks=[], peers=[], events=[],
        history={5: {"accuracy": 0.5, "loss": 1.2}, 7: {"accuracy": 0.9, "loss": 0.4}}, rejected={6: 2},
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def history_svg(history: dict[int, dict[str, float]], rejected: dict[int, int], head: str, tip: int) -> str:
    return render.render_figure(plot.history_figure(history, rejected, head, tip))


def test_peer_fields_are_escaped_in_the_peers_table() -> None:
    peer = views.PeerView('http://x"><script>1</script>', 3, "inbound", "<b>agent</b>", 5.0)
    html = render.render_live(page_view(peers=[peer]))
    assert "<script>1" not in html and "<b>agent" not in html
    assert str(escape(peer.url)) in html and "http://x&#34;&gt;&lt;script&gt;1&lt;/script&gt;" in html


def test_history_plot_marks_only_rejections_inside_its_range() -> None:
    svg = history_svg({5: {"accuracy": 0.5, "loss": 1.0}, 9: {"accuracy": 0.8, "loss": 0.5}},
                      {2: 1, 7: 3, 8: 0}, "classify", 9)
    assert '<g class="rejected" data-height="7">' in svg and "3 update(s)" in svg
    assert 'data-height="8"' not in svg, "a height with no rejection has no mark"
    assert '<g class="rejected" data-height="2">' in svg, "the x range widens to show older rejections"
    assert svg.count("<polyline") == 2


def test_long_histories_are_thinned_and_old_marks_merged() -> None:
    history = {h: {"accuracy": 0.5, "loss": 1.0} for h in range(5000)}
    rejected = dict.fromkeys(range(0, 5000, 10), 1)
    svg = history_svg(history, rejected, "classify", 4999)
    accuracy = re.search(r'data-series="accuracy" points="([^"]+)"', svg)
    assert accuracy is not None and len(accuracy.group(1).split()) == plot.MAX_PLOT_POINTS
    assert svg.count('<g class="rejected" ') == plot.MAX_DETAILED_MARKS
    assert '<g class="rejected" data-height="4990">' in svg and 'data-height="10">' not in svg
    assert f"{500 - plot.MAX_DETAILED_MARKS} older height(s)" in svg
    assert plot.thin([1, 2, 3, 4, 5], 3) == [1, 3, 5]


def test_empty_history_still_draws_a_frame_and_says_why() -> None:
    svg = history_svg({}, {}, "regress", 0)
    assert svg.startswith("<svg") and "<path" in svg and "waiting for the first evaluation" in svg


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    assert plot.nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    ticks = plot.nice_ticks(0.0, 2.37)
    assert ticks[0] <= 0.0 and ticks[-1] >= 2.37
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1 and steps.pop() in (0.5, 1.0)


def test_the_policy_hashes_exactly_the_inline_style_and_script() -> None:
    import base64
    import hashlib

    page = render.render_page(page_view())
    [style] = re.findall(r"<style>(.*?)</style>", page, re.S)
    [script] = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert style == render.ASSETS.css and script == render.ASSETS.script, "the static files, inlined as they are"
    for text in (style, script):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in render.CONTENT_SECURITY_POLICY
