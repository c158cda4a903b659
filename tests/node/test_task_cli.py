"""`gradchain task init|split|example|feed`: from a user's CSV to a task spec, a
testnet's data directory, and a price feed a live node learns from."""

from __future__ import annotations

import io
import json
import pathlib
import time

import numpy as np
import pytest

from consensus.header import hex_to_hash
from consensus.tx import Deploy, chain_tag, encode_tx, sign_tx
from ml.datafile import parse_csv
from ml.evalset import encode_evalset
from ml.tasks import TaskSpec, builtin_task
from node.cli.main import main
from node.cli.task import task_name
from node.client import ApiError, NodeClient
from node.config import NodeConfig
from node.keystore_file import read_keystore
from node.mining import mine_blocks
from tests.node.contrib import settled
from tests.node.threaded import NodeThread

UPDATE_TIMEOUT_S = 30.0  # a node's trainer picks appended rows up at its next step
TRAINED_ROUNDS = 3  # model steps (rounds) before the wine model is scored
MAX_TRAIN_BLOCKS = 120  # bond, maturity, then three rounds of sixteen, with room to spare
POLL_S = 0.05


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_init_writes_a_complete_valid_spec_for_a_csv(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv, spec_path = tmp_path / "wine.csv", tmp_path / "wine.json"
    assert run(capsys, "task", "example", "wine", "--out", str(csv))[0] == 0
    code, out, _ = run(capsys, "task", "init", "--data", str(csv), "--out", str(spec_path))
    assert code == 0 and "task 'wine', 3 classes from 13 features" in out
    spec = TaskSpec.from_dict(json.loads(spec_path.read_text()))
    assert (spec.name, spec.head, spec.output_dim, spec.input_dim) == ("wine", "classify", 3, 13)
    assert spec.features[0] == "alcohol" and len(spec.input_scale) == 13
    assert parse_csv(csv.read_text(), spec).rows == 178  # the file fits the spec made from it

    code, _, err = run(capsys, "task", "init", "--data", str(csv), "--out", str(spec_path))
    assert code == 1 and "already exists; add --force" in err
    code, out, _ = run(capsys, "task", "init", "--data", str(csv), "--out", str(spec_path), "--force",
                       "--name", "grapes", "--head", "regress", "--json")
    assert code == 0 and json.loads(out)["head"] == "regress"
    assert TaskSpec.from_dict(json.loads(spec_path.read_text())).name == "grapes"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a,b,label\n1,2,0\n3,x,1\n", "bad.csv: line 3, column 2 ('b'): 'x' is not a number"),
        ("a,b,label\n1,2,0\n3,4\n", "bad.csv: line 3: 2 values, expected 3"),
        ("a,b,y\n1,2,0\n", "must be named 'label'"),
        ("a,b,label\n1,2,3\n1,2,3\n", "the same"),
    ],
)
def test_init_refuses_a_bad_file_with_its_line_and_column(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], text: str, words: str
) -> None:
    (tmp_path / "bad.csv").write_text(text)
    code, _, err = run(capsys, "task", "init", "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "s.json"))
    assert code == 1 and words in err
    assert not (tmp_path / "s.json").exists()


def test_init_reads_npz_and_price_series(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, X=np.random.default_rng(0).normal(size=(20, 4)), y=np.linspace(0, 1, 20))
    (tmp_path / "t.npz").write_bytes(buffer.getvalue())
    assert run(capsys, "task", "init", "--data", str(tmp_path / "t.npz"), "--out", str(tmp_path / "t.json"))[0] == 0
    assert TaskSpec.from_dict(json.loads((tmp_path / "t.json").read_text())).head == "regress"

    assert run(capsys, "task", "example", "stock", "--days", "300", "--out", str(tmp_path / "p.csv"))[0] == 0
    code, out, _ = run(capsys, "task", "init", "--data", str(tmp_path / "p.csv"), "--out", str(tmp_path / "p.json"))
    assert code == 0 and "next-day return from 20 daily returns, from 279 rows" in out
    spec = TaskSpec.from_dict(json.loads((tmp_path / "p.json").read_text()))
    assert spec.window == 20 and spec.name == "p"


def test_task_names_come_from_file_names() -> None:
    assert task_name(pathlib.Path("dir/my data (v2).csv")) == "my_data_v2"
    assert task_name(pathlib.Path("...csv")) == "task"


def test_split_writes_a_testnet_data_directory(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "bc.csv"
    assert run(capsys, "task", "example", "breast_cancer", "--out", str(csv))[0] == 0
    code, out, _ = run(capsys, "task", "split", "--data", str(csv), "--nodes", "3", "--out", str(tmp_path / "d"))
    assert code == 0 and "eval.csv (143 rows)" in out
    parts = [parse_csv((tmp_path / "d" / f"{n}.csv").read_text()) for n in ("eval", "node0", "node1", "node2")]
    assert sum(p.rows for p in parts) == 569
    assert len({p.features for p in parts}) == 1
    code, _, err = run(capsys, "task", "split", "--data", str(csv), "--eval-fraction", "1.5", "--out", str(tmp_path / "e"))
    assert code == 1 and "evaluation share" in err


def test_feed_appends_days_that_the_node_trains_on(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stock example: a node trains on a price file; the feed adds a day at a time and scores forecasts."""
    prices = tmp_path / "prices.csv"
    assert run(capsys, "task", "example", "stock", "--days", "200", "--out", str(prices))[0] == 0
    monkeypatch.setenv("GRADCHAIN_PASSWORD", "pw")
    assert main(["wallet", "new", "--keystore", str(tmp_path / "me.json")]) == 0
    running = NodeThread(NodeConfig(datadir=tmp_path / "node", task="stock", byzantine_f=0, train=True,
                                    data_file=prices, keystore=tmp_path / "me.json", password="pw"))
    try:
        trainer = running.node.trainer
        start_rows = trainer.data.rows
        code, out, _ = run(capsys, "task", "feed", "--node", running.node.url, "--data", str(prices),
                           "--days", "3", "--interval", "0", "--json")
        assert code == 0
        days = [json.loads(line) for line in out.splitlines()]
        assert [d["days"] for d in days] == [1, 2, 3]
        assert all(isinstance(d["forecast"], float) and d["optimum_ratio"] is not None for d in days)
        lines = prices.read_text().splitlines()
        assert len(lines) == 1 + 200 + 3 and lines[-1].startswith(days[-1]["date"])
        # A new tip wakes the trainer, whose next step reads the file again.
        running.call(mine_blocks(running.node, 1))
        deadline = time.monotonic() + UPDATE_TIMEOUT_S
        while trainer.data.rows < start_rows + 3:
            assert time.monotonic() < deadline, "the node never picked up the fed days"
            time.sleep(POLL_S)
        assert trainer.data.rows == start_rows + 3
    finally:
        running.stop()


def test_feed_needs_a_price_series_task(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    running = NodeThread(NodeConfig(datadir=tmp_path / "node"))  # digits
    try:
        (tmp_path / "p.csv").write_text("date,close\n2020-01-01,1\n")
        code, _, err = run(capsys, "task", "feed", "--node", running.node.url, "--data", str(tmp_path / "p.csv"))
        assert code == 1 and "not a price series" in err
    finally:
        running.stop()


def test_builtin_stock_is_what_example_writes(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "task", "example", "stock", "--days", "50", "--seed", "7", "--out", str(tmp_path / "s.csv"))[0] == 0
    table = parse_csv((tmp_path / "s.csv").read_text(), builtin_task("stock"))
    assert table.X.shape == (50 - 1 - 20, 20)


def test_predict_scores_a_labelled_file_against_the_chain_model(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a CSV to predictions: a chain whose genesis carries the spec task init wrote."""
    csv, spec_path = tmp_path / "wine.csv", tmp_path / "wine.json"
    assert run(capsys, "task", "example", "wine", "--out", str(csv))[0] == 0
    assert run(capsys, "task", "init", "--data", str(csv), "--out", str(spec_path))[0] == 0
    monkeypatch.setenv("GRADCHAIN_PASSWORD", "pw")
    assert main(["wallet", "new", "--keystore", str(tmp_path / "me.json")]) == 0
    running = NodeThread(NodeConfig(datadir=tmp_path / "node", task=str(spec_path), byzantine_f=0, train=True,
                                    data_file=csv, eval_file=csv, keystore=tmp_path / "me.json", password="pw"))
    try:
        node = running.node
        # The one participant bonds with its first reward, commits a round's updates once the
        # bond is mature and reveals them in the next round (a block takes one); each round moves the model.
        while node.chain.state.model_version < TRAINED_ROUNDS:
            assert node.chain.height < MAX_TRAIN_BLOCKS, "the model never moved"
            deadline = time.monotonic() + UPDATE_TIMEOUT_S
            while not running.call(node.run_chain(settled, node, [node])):
                assert time.monotonic() < deadline, "the trainer owes the next block something it never sent"
                time.sleep(POLL_S)
            running.call(mine_blocks(node, 1))
        code, out, _ = run(capsys, "task", "predict", "--node", node.url, "--inputs", str(csv), "--json")
        assert code == 0
        reply = json.loads(out)
        assert reply["height"] == node.chain.height and len(reply["predictions"]) == 178
        assert reply["accuracy"] > 0.9  # a few rounds of one participant on the whole (standardised) table

        features_only = "\n".join(",".join(line.split(",")[:-1]) for line in csv.read_text().splitlines()[:4])
        (tmp_path / "rows.csv").write_text(features_only + "\n")
        code, out, err = run(capsys, "task", "predict", "--node", running.node.url, "--inputs",
                             str(tmp_path / "rows.csv"), "--height", "0")
        assert code == 0 and len(out.split()) == 3 and "at height 0" in err and "accuracy" not in err
        (tmp_path / "narrow.csv").write_text("alcohol,label\n1,0\n")
        code, _, err = run(capsys, "task", "predict", "--node", running.node.url, "--inputs", str(tmp_path / "narrow.csv"))
        assert code == 1 and "1 feature column(s); task 'wine' takes 13" in err
    finally:
        running.stop()


def test_list_show_and_name_a_task_by_a_prefix_of_its_id(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = NodeThread(NodeConfig(datadir=tmp_path / "node"))
    try:
        url = running.node.url
        code, out, _ = run(capsys, "task", "list", "--node", url, "--json")
        (task,) = json.loads(out)
        assert code == 0 and task["name"] == "digits" and task["status"] == "training" and len(task["id"]) == 64
        code, out, _ = run(capsys, "task", "list", "--node", url)
        assert code == 0 and out.startswith(task["id"]) and "digits" in out
        code, out, _ = run(capsys, "task", "show", "--node", url, "--task", task["id"][:8])
        assert code == 0 and f"task     {task['id']}" in out and f"rule {running.node.chain.task.rule} f=1" in out
        code, _, err = run(capsys, "task", "show", "--node", url, "--task", "ffff" if task["id"][:4] != "ffff" else "0000")
        assert code == 1 and "is not a task of this chain" in err and task["id"] in err
        code, _, err = run(capsys, "task", "show", "--node", url, "--task", "ab")
        assert code == 1 and "is not a task" in err  # too short to be a prefix
    finally:
        running.stop()


def test_deploy_checks_everything_before_sending_and_prints_the_new_tasks_id(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad input is a clear error and nothing reaches the chain; a good deploy prints an id the node lists."""
    csv, spec_path, data = tmp_path / "wine.csv", tmp_path / "wine.json", tmp_path / "wine-data"
    assert run(capsys, "task", "example", "wine", "--out", str(csv))[0] == 0
    assert run(capsys, "task", "init", "--data", str(csv), "--out", str(spec_path))[0] == 0
    assert run(capsys, "task", "split", "--data", str(csv), "--nodes", "2", "--out", str(data))[0] == 0
    eval_csv = data / "eval.csv"
    monkeypatch.setenv("GRADCHAIN_PASSWORD", "pw")
    keystore = tmp_path / "me.json"
    assert main(["wallet", "new", "--keystore", str(keystore)]) == 0
    running = NodeThread(NodeConfig(datadir=tmp_path / "node", keystore=keystore, password="pw"))
    try:
        url = running.node.url
        deploy = ["task", "deploy", "--node", url, "--keystore", str(keystore), "--spec", str(spec_path),
                  "--eval", str(eval_csv)]
        # no coins yet: refused before anything is signed or sent
        code, _, err = run(capsys, *deploy)
        assert code == 1 and "holds 0 base units; the deploy locks" in err
        # a spec with an unknown field
        spec = json.loads(spec_path.read_text())
        (tmp_path / "typo.json").write_text(json.dumps({**spec, "learning_rate": 0.1}))
        code, _, err = run(capsys, *deploy[:-4], "--spec", str(tmp_path / "typo.json"), "--eval", str(eval_csv))
        assert code == 1 and "unknown key(s) ['learning_rate']" in err
        # an evaluation file of the wrong width
        narrow = tmp_path / "narrow.csv"
        narrow.write_text("a,b,label\n1,2,0\n")
        code, _, err = run(capsys, *deploy[:-1], str(narrow))
        assert code == 1 and "narrow.csv" in err
        assert len(running.node.mempool) == 0 and len(running.node.chain.state.tasks) == 1

        running.call(mine_blocks(running.node, 1))  # the keystore's key is the miner: 50 M to spend
        # sent anyway (signed by hand, past the CLI's checks): the node refuses it with the rule
        me = read_keystore(keystore, "pw")
        client = NodeClient(url)
        for task, rows in (({**spec, "learning_rate": 0.1}, b"\0" * 8), (spec, encode_evalset(np.zeros((2, 3)), np.array([0, 1])))):
            status = client.status()
            tx = Deploy(me.public, 0, 0, 1000, task, rows)
            raw = encode_tx(sign_tx(tx, me, chain_tag(int(status["chain_id"]), hex_to_hash(status["genesis"]))))
            with pytest.raises(ApiError, match="bad-task-spec|bad-eval-set") as refused:
                client.submit_raw_tx(raw)
            assert 400 <= refused.value.status < 500
        assert len(running.node.mempool) == 0 and len(running.node.chain.state.tasks) == 1
        code, out, err = run(capsys, *deploy, "--bounty", "20000000")
        task_id = out.strip()
        assert code == 0 and len(task_id) == 64 and "deployed with a bounty of 20000000" in err
        running.call(mine_blocks(running.node, 1))
        code, out, _ = run(capsys, "task", "list", "--node", url, "--json")
        listed = {t["id"]: t for t in json.loads(out)}
        assert listed[task_id]["name"] == "wine" and listed[task_id]["bounty_left"] == 20_000_000
        assert listed[task_id]["eval_rows"] == len(eval_csv.read_text().splitlines()) - 1
        code, out, _ = run(capsys, "task", "show", "--node", url, "--task", "wine")  # by its name
        assert code == 0 and f"task     {task_id}" in out and "bounty left 20000000, " in out
    finally:
        running.stop()
