"""`gradchain testnet up --task SPEC.json --data DIR`: real node processes; node0 deploys
the task by a transaction, each node trains it on its own participant file, every
file checked before any node starts.

    DIR/eval.csv                 the deploy's evaluation rows, scored by every node (dashboard, API)
    DIR/node0.csv -> node0       DIR/node1.csv -> node1  ...
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
from collections.abc import Iterator

import pytest

from ml.datafile import infer_spec
from ml.tabular import concat, sklearn_table, split_table, table_csv
from node.cli.main import main
from node.client import ApiError, NodeClient
from node.testnet import launcher
from node.testnet.launcher import load_manifest, node_argv
from tests.conftest import wait_until

NODES = 2
PORT_RANGE = (20_000, 60_000)
# node0 mines and deploys alone, then two node processes bond, and a round of sixteen regtest blocks closes
TRAIN_TIMEOUT_S = 150


@pytest.fixture()
def wine_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A spec made with task init's inference and DIR with eval.csv, node0.csv, node1.csv."""
    evaluation, parts = split_table(sklearn_table("wine"), NODES, eval_fraction=0.25, alpha=1.0, seed=0)
    spec = dataclasses.replace(infer_spec(concat(parts), name="wine"), f=0)  # two nodes: every block moves it
    (tmp_path / "wine.json").write_text(json.dumps(spec.to_dict()))
    data = tmp_path / "data"
    data.mkdir()
    (data / "eval.csv").write_text(table_csv(evaluation))
    for i, part in enumerate(parts):
        (data / f"node{i}.csv").write_text(table_csv(part))
    return tmp_path


@pytest.fixture()
def testnet_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    directory = tmp_path / "tn"
    try:
        yield directory
    finally:
        if (directory / "testnet.json").exists():
            main(["testnet", "down", "--dir", str(directory)])


def up(testnet_dir: pathlib.Path, spec: pathlib.Path, data: pathlib.Path) -> int:
    # Away from 18740, where other testnets on this machine (a user's, another test run's) start.
    base = random.Random().randrange(*PORT_RANGE)
    return main(["testnet", "up", "--dir", str(testnet_dir), "--nodes", str(NODES), "--network", "regtest",
                 "--task", str(spec), "--data", str(data), "--detach", "--base-port", str(base)])


def wine_trained(entry: launcher.NodeEntry) -> bool:
    """The node of ``entry`` is up (its own process) and lists the deployed wine task, moved and scored."""
    if not launcher.is_alive(entry.pid):
        raise AssertionError(f"{entry.name} exited: {(pathlib.Path(entry.datadir) / 'node.log').read_text()[-500:]}")
    try:
        tasks = NodeClient(entry.api, timeout=5).tasks()
    except ApiError:
        return False
    wine = [t for t in tasks if t["name"] == "wine"]
    return bool(wine) and wine[0]["version"] >= 1 and str(wine[0]["label"]).startswith("acc ")


def test_each_node_trains_on_its_own_file(wine_dir: pathlib.Path, testnet_dir: pathlib.Path) -> None:
    """node0 deploys wine on a digits chain; each node trains digits on its shard and wine on its file."""
    assert up(testnet_dir, wine_dir / "wine.json", wine_dir / "data") == 0
    entries = load_manifest(testnet_dir)
    wait_until(lambda: all(wine_trained(e) for e in entries), timeout=TRAIN_TIMEOUT_S,
               what="every node listing the wine model moved and scored on eval.csv")
    tasks = NodeClient(entries[0].api).tasks()
    assert [t["name"] for t in tasks] == ["digits", "wine"] and tasks[1]["deployed"]
    for i, entry in enumerate(entries):
        argv = entry.argv
        assert argv[argv.index("--data") + 1] == str((wine_dir / "data" / f"node{i}.csv").resolve())
        assert argv[argv.index("--data") - 1] == tasks[1]["id"] and argv[argv.index("--task") + 1] == "digits"
        assert "--eval" not in argv  # the deploy carried eval.csv's rows: every node scores on them
    for entry in entries:  # the plaintext never enters the datadir; the sealed copy does
        assert (pathlib.Path(entry.datadir) / "data.bin").exists()
        assert not list(pathlib.Path(entry.datadir).glob("*.csv"))


@pytest.mark.parametrize(
    ("breakage", "words"),
    [
        ("missing", "node1.csv is missing"),
        ("bad-cell", "node1.csv: line 3, column 2 ('malic_acid'): 'oops' is not a number"),
        ("no-label", "node0.csv: line 2: 13 values, expected 14"),
        ("eval-width", "eval.csv: the file has 12 feature column(s); task 'wine' takes 13"),
    ],
)
def test_a_bad_data_directory_stops_before_any_node_starts(
    wine_dir: pathlib.Path, testnet_dir: pathlib.Path, capsys: pytest.CaptureFixture[str], breakage: str, words: str
) -> None:
    data = wine_dir / "data"
    if breakage == "missing":
        (data / "node1.csv").unlink()
    elif breakage == "bad-cell":
        lines = (data / "node1.csv").read_text().splitlines()
        cells = lines[2].split(",")
        cells[1] = "oops"
        lines[2] = ",".join(cells)
        (data / "node1.csv").write_text("\n".join(lines) + "\n")
    elif breakage == "no-label":
        lines = (data / "node0.csv").read_text().splitlines()
        lines[1] = lines[1].rsplit(",", 1)[0]
        (data / "node0.csv").write_text("\n".join(lines) + "\n")
    else:
        lines = (data / "eval.csv").read_text().splitlines()
        (data / "eval.csv").write_text("\n".join(",".join(line.split(",")[1:]) for line in lines) + "\n")
    capsys.readouterr()
    assert up(testnet_dir, wine_dir / "wine.json", data) == 1
    assert words in capsys.readouterr().err
    assert not (testnet_dir / "testnet.json").exists()


def test_a_spec_with_an_unknown_field_or_no_data_is_refused(
    wine_dir: pathlib.Path, testnet_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = json.loads((wine_dir / "wine.json").read_text())
    spec["learning_rate"] = 0.1
    (wine_dir / "typo.json").write_text(json.dumps(spec))
    capsys.readouterr()
    assert up(testnet_dir, wine_dir / "typo.json", wine_dir / "data") == 1
    assert "unknown key(s) ['learning_rate']" in capsys.readouterr().err
    assert main(["testnet", "up", "--dir", str(testnet_dir), "--task", str(wine_dir / "wine.json"), "--detach"]) == 1
    assert "no built-in data: give each node its file with --data DIR" in capsys.readouterr().err


def test_node_argv_without_data_is_unchanged() -> None:
    argv = node_argv(launcher.TestnetPlan(), 0, pathlib.Path("d"), 1, None, False)
    assert "--data" not in argv and "--eval" not in argv and argv[argv.index("--task") + 1] == "digits"
