"""Screenshot a running node's dashboard for the docs (headless Chromium).

    .venv/bin/python docs/screenshot.py http://127.0.0.1:18740/ docs/img/dashboard.png

Needs Debian's chromium and chromium-driver (`make test` installs them).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import tempfile

WIDTH, HEIGHT = 1360, 900
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def main(url: str, out: pathlib.Path) -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        print("error: install chromium and chromium-driver first (apt-get install chromium chromium-driver)")
        return 1
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        try:
            driver.get(url)
            height = int(driver.execute_script("return document.documentElement.scrollHeight"))
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": WIDTH, "height": max(HEIGHT, height), "deviceScaleFactor": 1,
                                    "mobile": False})
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1], pathlib.Path(sys.argv[2])))
