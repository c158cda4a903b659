"""The dashboard's templates, rendered from view models with edge data.

Escaping is by construction (every template is autoescaped), so the first
test fills every text field of every view model, nested ones included, with
markup and checks that none of it reaches a page as markup. A field added
later (a new panel's) is covered without touching the test.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

import pytest
from markupsafe import escape

from node.api import dashboard_render as render
from node.api import dashboard_views as views
from node.api.status import StatusSnapshot

PAYLOAD = """<i id="x" onclick='alert(1)'>&amp;</i>"""
NOW = 1_700_000_000.0
ADDRESS = "gc1qqrzthxyz0000000000000000000000000000hut9"


def hostile(tp: Any) -> Any:
    """A value of type ``tp`` whose every string is :data:`PAYLOAD` (one item per list or mapping)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return hostile(next(a for a in args if a is not type(None)))
    if origin is list:
        return [hostile(args[0])]
    if origin in (dict, Mapping):
        return {hostile(args[0]): hostile(args[1])}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{f.name: hostile(hints[f.name]) for f in dataclasses.fields(tp)})
    samples: dict[Any, Any] = {str: PAYLOAD, int: 1, float: 1.0, bool: True}
    return samples[tp]


def assert_inert(html: str) -> None:
    assert "<i " not in html and "onclick='" not in html, "markup from a field reached the page"
    assert str(escape(PAYLOAD)) in html


def test_every_text_field_a_peer_or_user_controls_is_escaped_on_every_page() -> None:
    page = hostile(views.PageView)
    assert page.peers[0].url == page.blocks[0].txs[0].update.sender == PAYLOAD, "nested fields are filled too"
    for html in (render.render_page(page), render.render_live(page)):
        assert_inert(html)
        for text in (page.status.network, page.peers[0].user_agent, page.events[0].message):
            assert text == PAYLOAD
        assert html.count(str(escape(PAYLOAD))) >= 10
    assert_inert(render.render_block_page(hostile(views.BlockPageView)))
    assert_inert(render.render_error_page(hostile(views.ErrorView)))


# -- edge data ------------------------------------------------------------------------------------
def status(**overrides: Any) -> StatusSnapshot:
    base = StatusSnapshot(
        chain_id=1, genesis="ef" * 32, network="regtest", task="digits", task_id="12" * 32, head="classify",
        rule="median", f=1, height=0, round=0, round_blocks=8, tip="ab" * 32, state_root="cd" * 32, model_version=0,
        peers=0, known_peers=0, banned_peers=0, mining=False,
        hashrate=0.0, mempool=0, syncing=False, url="http://127.0.0.1:1", training=False, uptime_s=5,
        taken_at=NOW,
    )
    return dataclasses.replace(base, **overrides)


def page(**overrides: Any) -> views.PageView:
    base = views.PageView(status=status(), blocks=[], peers=[], events=[], history={}, rejected={})
    return dataclasses.replace(base, **overrides)


def update(accepted: bool | None, outcome: str, norm: float | None = 0.5) -> views.UpdateView:
    return views.UpdateView("ee" * 32, ADDRESS, 2, "f32", 650, norm, accepted, outcome)


def block(height: int, updates: list[views.UpdateView], main_chain: bool = True) -> views.BlockView:
    txs = [views.TxView(0, "coinbase", "aa" * 32, 100, None, f"height {height}; pays nobody")]
    txs += [views.TxView(i + 1, "update", u.txid, 900, u.sender, "base 2", u) for i, u in enumerate(updates)]
    return views.BlockView(height, f"{height:064x}", f"{max(0, height - 1):064x}", int(NOW) - 30, "0x207fffff",
                           7, "ef" * 32, main_chain, ADDRESS if updates else None, txs)


def section(html: str, table_id: str) -> str:
    return html.split(f'id="{table_id}"')[1].split("</table>")[0]


def test_a_fresh_node_shows_every_panel_empty_with_a_reason() -> None:
    html = render.render_page(page())
    assert "no events yet" in html and "no peers connected" in html and "no updates in recent blocks" in html
    assert "not evaluated yet" in html and "waiting for the first evaluation" in html
    assert "on-demand blocks only" in html and "syncing</span>" not in html
    assert "no update rejected by median (f=1) so far · 0 evaluated height(s)" in html
    assert "prediction-plot" not in html, "no prediction panel without a prediction"
    assert re.search(r'id="tip-height">0<', html)


def test_the_stat_cards_read_the_status_snapshot() -> None:
    snapshot = status(height=12, mining=True, hashrate=2.5e3, mempool=4, peers=3, known_peers=9, banned_peers=2,
                      training=True, uptime_s=7300, syncing=True, model_version=11)
    html = render.render_live(page(status=snapshot, history={12: {"accuracy": 0.875, "loss": 0.25}}))
    assert re.search(r'id="tip-height-stat">12<', html) and re.search(r'id="tip-height">12<', html)
    assert "2.50 kH/s" in html and ">4</div><div class=\"sub\">transactions waiting" in html
    assert ">3</div><div class=\"sub\">9 known · 2 banned" in html and "up 2 h" in html
    assert "87.5%" in html and "loss 0.25 · v11" in html
    assert '<span class="badge bad">syncing</span>' in html


def test_figures_that_are_not_numbers_show_a_dash() -> None:
    html = render.render_live(page(history={3: {"accuracy": math.nan}}))
    assert ">—</div><div class=\"sub\">loss — · v0" in html
    regress = page(status=status(head="regress"), history={3: {"mse": 1.0}})
    assert "worse than naive" in render.render_live(regress), "no ratio is not a win"


def test_a_regress_task_shows_its_prediction_and_verdict() -> None:
    prediction = views.Prediction(9, [0.1, -0.2], [0.3, 0.0], mse=0.5, naive_mse=1.0, mae=0.4, naive_mae=0.6,
                                  test_days=250)
    html = render.render_live(page(status=status(head="regress", height=9), prediction=prediction,
                                   history={9: {"mse": 0.5, "naive_mse": 1.0, "mse_ratio": 0.5}}))
    assert "MSE / naive" in html and "beats naive" in html and "Test MSE vs naive per height" in html
    assert "model MSE <b>0.5</b> vs naive <b>1</b> (ratio 0.5, the model beats tomorrow = today)" in html
    assert "over 250 test days, the last 2 drawn" in html
    zero = dataclasses.replace(prediction, naive_mse=0.0)
    assert "(ratio —, the model does not beat" in render.render_live(page(prediction=zero))


def test_the_blocks_table_counts_updates_by_verdict() -> None:
    mixed = block(3, [update(True, "accepted"), update(True, "accepted"), update(False, "rejected"),
                      update(None, "not applied"), update(None, "")])
    html = render.render_live(page(status=status(height=3), blocks=[mixed, block(2, [])]))
    row = html.split('<tr data-height="3">')[1].split("</tr>")[0]
    for chip in ('"badge ok">2 accepted<', '"badge bad">1 rejected<', '"badge off">1 not applied<',
                 '"badge off">1 pending<'):
        assert chip in row
    empty_row = html.split('<tr data-height="2">')[1].split("</tr>")[0]
    updates_cell = empty_row.split("<td>")[5]
    assert '<span class="muted">—</span>' in updates_cell and "badge" not in updates_cell
    updates = section(html, "updates")
    assert updates.count('href="/blocks/3"') == 5
    assert "not connected</span>" in updates and "not applied</span>" in updates


@pytest.mark.parametrize(
    ("vote", "chip"),
    [("counted", '"badge ok"'), ("rejected", '"badge bad"'), ("gated", '"badge bad"'), ("zero", '"badge off"'),
     ("open", '"badge off"')],
)
def test_the_blocks_table_shows_what_the_round_made_of_each_vote(vote: str, chip: str) -> None:
    """An attacker's block whose vote the round rejected reads "rejected" in the blocks table."""
    voted = dataclasses.replace(block(4, [update(True, "accepted")]), vote=vote)
    html = render.render_live(page(status=status(height=4), blocks=[voted]))
    row = html.split('<tr data-height="4">')[1].split("</tr>")[0]
    assert f'{chip} title=' in row and f">{vote}</span>" in row


def test_a_block_page_links_its_neighbours_and_lists_each_verdict() -> None:
    middle = block(5, [update(True, "accepted", norm=None), update(False, "rejected")])
    html = render.render_block_page(views.BlockPageView(middle, "regtest", "digits", tip=9))
    assert 'href="/blocks/4">← 4</a>' in html and 'href="/blocks/6">6 →</a>' in html
    assert f'href="/blocks/{middle.prev}"' in html and "main chain</span>" in html
    rows = section(html, "block-updates")
    assert "accepted</span>" in rows and "rejected</span>" in rows and ">—</td>" in rows, "no norm: a dash"
    assert section(html, "txs").count("<tr>") == 4, "header row, coinbase and two updates"


def test_the_genesis_block_page_has_no_neighbours_or_update_table() -> None:
    genesis = block(0, [], main_chain=False)
    html = render.render_block_page(views.BlockPageView(genesis, "regtest", "digits", tip=0))
    assert "none (genesis)" in html and "←" not in html and "→" not in html
    assert "Block 0 · <a href=\"/\">dashboard</a>" in html
    assert 'id="block-updates"' not in html and "side branch</span>" in html
    assert "<title>gradchain block 0</title>" in html


def test_an_error_page_says_what_went_wrong_and_how_back() -> None:
    html = render.render_error_page(views.ErrorView(404, "no block 999", "regtest", "digits"))
    assert "<title>gradchain error 404</title>" in html and "<p>no block 999</p>" in html
    assert 'href="/">back to the dashboard' in html and "<script>" not in html, "only live pages refresh"
