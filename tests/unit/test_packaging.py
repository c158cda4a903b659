"""setup.cfg ships what exists: every package-data pattern matches a file in the tree."""

from __future__ import annotations

import configparser
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_package_data_pattern_matches_a_file() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    empty = [
        f"{package} = {pattern}"
        for package, patterns in config["options.package_data"].items()
        for pattern in re.split(r"[,\s]+", patterns.strip())
        if not any(path.is_file() for path in (ROOT / package).glob(pattern))
    ]
    assert not empty, f"setup.cfg ships patterns that match nothing: {empty}"
