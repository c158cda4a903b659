"""The dashboard in a real headless Chromium: plot and tables render and follow new blocks.

A regtest node (trainer on, miner off) runs on its own event loop in a
daemon thread; the test mines on demand and waits, with WebDriverWait and a
deadline, for the page's refresh loop to show the new height. It saves a
screenshot in its temporary directory, or at $GRADCHAIN_SCREENSHOT when that
is set (to look at one); a test never writes into the working tree.

Needs the Debian packages ``chromium`` and ``chromium-driver``; without them
the test skips and says so.
"""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from node.config import NodeConfig
from tests.node.contrib import mine_settled
from tests.node.threaded import NodeThread
from wallet import keypair_from_seed

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT_ENV = "GRADCHAIN_SCREENSHOT"  # where to keep the screenshot; default: the test's tmp_path
PAGE_TIMEOUT_S = 20.0  # a page load, or a few refresh periods of the page's live loop
UPDATE_TIMEOUT_S = 20.0  # one local training run of the trainer
WINDOW_W, WINDOW_H = 1360, 1000  # the screenshot's viewport before it grows to the page's height
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not found: apt-get install chromium chromium-driver",
)


class BrowserNode(NodeThread):
    """The threaded node, plus mining on demand once its trainer's transactions are in."""

    def mine_with_updates(self, blocks: int) -> int:
        """Mine until ``blocks`` more blocks carry the trainer's update (the last one does); returns the height.

        The trainer bonds with the first reward, commits once the bond is
        mature and reveals one update per block in the next round
        (tests.node.contrib.mine_settled), one block per call to the node's loop.
        """
        while blocks:
            if self.call(mine_settled(self.node, UPDATE_TIMEOUT_S)):
                blocks -= 1
        return self.node.chain.height


@pytest.fixture()
def running(tmp_path: pathlib.Path) -> Iterator[BrowserNode]:
    node = BrowserNode(NodeConfig(datadir=tmp_path / "node", network="regtest", train=True, mine=False, byzantine_f=0,
                   keypair=keypair_from_seed(bytes(32))))
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture()
def browser(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument(f"--window-size={WINDOW_W},{WINDOW_H}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def save_full_page(driver: Any, path: pathlib.Path) -> None:
    """Screenshot the whole page: the viewport is stretched to the document's height first."""
    page_height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WINDOW_W, "height": max(WINDOW_H, page_height), "deviceScaleFactor": 1, "mobile": False},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        assert driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# Read in one script run: the page swaps its live region every few seconds, and a
# swap between two WebDriver calls would leave the second holding a stale element.
SNAPSHOT_JS = """
const all = s => document.querySelectorAll(s);
const plot = document.querySelector('svg.history-plot');
const box = plot ? plot.getBoundingClientRect() : {width: 0, height: 0};
const shown = id => { const t = document.getElementById(id); return t !== null && t.offsetParent !== null; };
return {
  height: Number(document.getElementById('tip-height').textContent),
  accuracy_lines: all("svg.history-plot polyline[data-series='accuracy']").length,
  points: all('svg.history-plot circle').length,
  plot_width: box.width, plot_height: box.height,
  tables: ['blocks', 'updates', 'peers'].filter(shown),
  block_rows: Array.from(all('#blocks tbody tr')).map(r => r.dataset.height),
  accepted: all('#updates .badge.ok').length,
  newest_link: document.querySelector('#blocks tbody tr a').href,
  stale: document.body.classList.contains('stale'),
};
"""


def snapshot(driver: Any) -> dict[str, Any]:
    result = driver.execute_script(SNAPSHOT_JS)
    assert isinstance(result, dict)
    return result


def test_dashboard_renders_in_chromium_and_follows_new_blocks(
    running: BrowserNode, browser: Any, tmp_path: pathlib.Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tip = running.mine_with_updates(2)
    browser.get(running.node.url + "/")
    wait = WebDriverWait(browser, PAGE_TIMEOUT_S)

    first = snapshot(browser)
    assert first["height"] == running.node.chain.height == tip
    assert first["accuracy_lines"] == 1
    assert first["plot_width"] > 300 and first["plot_height"] > 100, "the plot is laid out at a readable size"
    assert first["tables"] == ["blocks", "updates", "peers"]
    assert first["block_rows"][:4] == [str(h) for h in range(tip, tip - 4, -1)]
    assert first["accepted"] >= 2, "the last two blocks with updates carry accepted ones"
    assert first["stale"] is False

    newest = running.mine_with_updates(1)
    wait.until(lambda d: snapshot(d)["height"] == newest, f"the live loop never showed height {newest}")
    wait.until(  # the page evaluates the tip it shows, so a new height is a new point
        lambda d: snapshot(d)["points"] > first["points"], "the plot did not grow with the new heights"
    )
    later = snapshot(browser)
    assert later["block_rows"][0] == str(newest) and later["stale"] is False
    screenshot = pathlib.Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
    save_full_page(browser, screenshot)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The explorer: open the newest block's page and find its update's verdict.
    browser.get(later["newest_link"])
    wait.until(lambda d: d.find_elements(By.ID, "txs"))
    assert f"block {newest}" in browser.title
    assert browser.find_elements(By.CSS_SELECTOR, "#block-updates .badge.ok")
