"""Bring your own trainer: the client commands against a live regtest node.

A node runs in a background thread with the miner's keystore; the test
drives it only through `gradchain wallet|update|model ...` and NodeClient,
as an external participant would.
"""

from __future__ import annotations

import json
import pathlib
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from ml.datafile import Table, infer_spec
from ml.datasets import load_dataset
from ml.evalset import encode_evalset
from ml.tasks import builtin_task
from ml.trainer import train_update
from node.cli.main import main
from node.client import ApiError, NodeClient
from node.config import NodeConfig
from node.keystore_file import keystore_address, read_keystore
from node.taskfile import default_bounty
from tests.conftest import wait_until
from tests.node.threaded import QUICK_DEPLOY_DEFAULTS, NodeThread
from wallet import address_bytes

PASSWORD = "pw"
SUBMIT_TIMEOUT_S = 120.0  # two rounds of on-demand blocks and a commitment's worth of reveals
POLL_S = 0.3


@pytest.fixture()
def live(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[NodeClient, pathlib.Path]]:
    monkeypatch.setenv("GRADCHAIN_PASSWORD", PASSWORD)
    keystore = tmp_path / "miner.json"
    assert main(["wallet", "new", "--keystore", str(keystore)]) == 0
    # f=0: this node's blocks carry one update each (the default f=1 needs three).
    running = NodeThread(NodeConfig(datadir=tmp_path / "node", keystore=keystore, password=PASSWORD, byzantine_f=0))
    token = (tmp_path / "node" / ".cookie").read_text()
    try:
        yield NodeClient(running.node.url, token=token), keystore
    finally:
        running.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_send_and_balance(live: tuple[NodeClient, pathlib.Path], tmp_path: pathlib.Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    client, keystore = live
    client.mine(2)  # the miner earns two block rewards
    miner = keystore_address(keystore)
    reward = builtin_task("digits").block_reward
    code, out, _ = run(capsys, "wallet", "balance", "--node", client.url, miner, "--json")
    assert code == 0 and f'"balance": {2 * reward}' in out
    assert main(["wallet", "new", "--keystore", str(tmp_path / "bob.json")]) == 0
    bob = keystore_address(tmp_path / "bob.json")
    code, out, err = run(capsys, "wallet", "send", "--node", client.url, "--keystore", str(keystore),
                         "--to", bob, "--amount", "1234", "--fee", "10")
    assert code == 0, err
    assert client.tx(out.strip())["status"] == "mempool"
    client.mine(1)
    assert client.tx(out.strip())["status"] == "confirmed"
    assert client.account(bob)["balance"] == 1234
    code, _, err = run(capsys, "wallet", "send", "--node", client.url, "--keystore", str(keystore),
                       "--to", bob[:-1] + ("q" if bob[-1] != "q" else "p"), "--amount", "1")
    assert code == 1 and "typo" in err


def test_update_submit_trains_the_shared_model(live: tuple[NodeClient, pathlib.Path], tmp_path: pathlib.Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Bond, then submit a round's worth of updates: committed now, every reveal pooled when the next
    round starts (a block takes one per sender; the command returns when all are on chain), applied at
    that round's end."""
    client, keystore = live
    task = builtin_task("digits")
    client.mine(1)  # the bond's coins
    code, out, err = run(capsys, "update", "bond", "--node", client.url, "--keystore", str(keystore))
    assert code == 0, err
    client.mine(1 + task.bond_maturity)
    assert client.account(keystore_address(keystore))["bond"] is not None
    params, _ = client.model_params()
    assert params.shape == (task.param_count,)
    data = load_dataset(task)
    deltas = np.stack([train_update(task, params, data.X_train, data.y_train, rng=np.random.default_rng(i))
                       for i in range(task.round_blocks)])
    np.save(tmp_path / "updates.npy", deltas)
    before = client.model()["metrics"]["accuracy"]
    result: dict[str, int] = {}
    submit = threading.Thread(target=lambda: result.setdefault("code", main([
        "update", "submit", "--node", client.url, "--keystore", str(keystore), "--file", str(tmp_path / "updates.npy"),
    ])))
    submit.start()
    deadline = time.monotonic() + SUBMIT_TIMEOUT_S

    def wait_for_a_tx() -> None:
        while submit.is_alive() and client.status()["mempool"] == 0:
            assert time.monotonic() < deadline, "update submit sent nothing"
            submit.join(timeout=POLL_S)

    wait_for_a_tx()
    client.mine(1)  # the commitment
    while client.status()["height"] % task.round_blocks:
        client.mine(1)  # to the round that reveals
    # before any block of it, the whole round's worth is pooled: one for each of its blocks
    wait_until(lambda: client.status()["mempool"] == task.round_blocks, SUBMIT_TIMEOUT_S,
               what="all the reveals in the pool")
    while submit.is_alive():  # a block takes one reveal per sender
        wait_for_a_tx()
        if submit.is_alive() or client.status()["mempool"]:
            client.mine(1)
    assert result["code"] == 0
    while client.status()["height"] % task.round_blocks:
        client.mine(1)  # to the reveal round's last block, which moves the model
    assert client.model()["version"] == 1
    assert client.model()["metrics"]["accuracy"] > before

    code, out, _ = run(capsys, "model", "get", "--node", client.url, "--out", str(tmp_path / "p.npy"))
    assert code == 0
    assert np.array_equal(np.load(tmp_path / "p.npy"), client.model_params()[0])
    np.savetxt(tmp_path / "x.csv", data.X_test[:5], delimiter=",")
    code, out, _ = run(capsys, "model", "predict", "--node", client.url, "--inputs", str(tmp_path / "x.csv"))
    assert code == 0 and len(out.split()) == 5


def test_bad_updates_are_refused_before_sending(live: tuple[NodeClient, pathlib.Path], tmp_path: pathlib.Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    client, keystore = live
    np.save(tmp_path / "short.npy", np.zeros(10, dtype=np.float32))
    code, _, err = run(capsys, "update", "submit", "--node", client.url, "--keystore", str(keystore),
                       "--file", str(tmp_path / "short.npy"))
    assert code == 1 and "expects [650]" in err
    bad = np.zeros(650, dtype=np.float32)
    bad[3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    code, _, err = run(capsys, "update", "submit", "--node", client.url, "--keystore", str(keystore),
                       "--file", str(tmp_path / "nan.npy"))
    assert code == 1 and "NaN" in err
    np.savetxt(tmp_path / "rows.csv", np.zeros((3, 650)), delimiter=",")
    code, _, err = run(capsys, "update", "submit", "--node", client.url, "--keystore", str(keystore),
                       "--file", str(tmp_path / "rows.csv"))
    assert code == 1 and "is not a .npy file" in err and "pickle" not in err
    assert "expected a .npy of float32 with task digits's 650 parameters" in err
    assert client.status()["mempool"] == 0


def test_json_results_and_input_files_in_our_words(live: tuple[NodeClient, pathlib.Path], tmp_path: pathlib.Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    client, keystore = live
    client.mine(1)  # the bond's coins
    code, out, err = run(capsys, "update", "bond", "--node", client.url, "--keystore", str(keystore), "--json")
    assert code == 0, err
    bonded = json.loads(out)
    assert bonded["already_bonded"] is False and client.tx(bonded["txid"])["status"] == "mempool"
    client.mine(1)
    code, out, err = run(capsys, "update", "bond", "--node", client.url, "--keystore", str(keystore), "--json")
    assert code == 0 and json.loads(out) == {"txid": None, "already_bonded": True}, err
    code, out, _ = run(capsys, "model", "get", "--node", client.url, "--out", str(tmp_path / "p.npy"), "--json")
    assert code == 0 and json.loads(out) == {"path": str(tmp_path / "p.npy"), "height": 2, "parameters": 650}
    np.savetxt(tmp_path / "x.csv", np.zeros((2, 64)), delimiter=",")
    code, out, _ = run(capsys, "model", "predict", "--node", client.url, "--inputs", str(tmp_path / "x.csv"),
                       "--json")
    assert code == 0 and len(json.loads(out)["predictions"]) == 2
    (tmp_path / "header.csv").write_text("p0,p1\n1,2\n")
    code, out, err = run(capsys, "model", "predict", "--node", client.url, "--inputs", str(tmp_path / "header.csv"))
    assert code == 1 and out == "" and "expected rows of 64 numbers" in err and "no header row" in err
    code, _, err = run(capsys, "model", "get", "--node", client.url, "--out", str(tmp_path / "no" / "p.npy"))
    assert code == 1 and f"directory {tmp_path / 'no'} does not exist; create it" in err


def test_control_routes_need_the_cookie(live: tuple[NodeClient, pathlib.Path]) -> None:
    client, _ = live
    with pytest.raises(ApiError) as info:
        NodeClient(client.url).mine(1)
    assert info.value.status == 401
    with pytest.raises(ApiError) as info:
        NodeClient(client.url, token="0" * 64).mine(1)
    assert info.value.status == 401


def test_update_commands_train_a_task_deployed_by_a_transaction(
    live: tuple[NodeClient, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`update bond|submit --task`: a key bonds to a deployed task (named by a prefix of its id, or
    by its name) and its updates move that task's model; the chain's first task is untouched."""
    client, keystore = live
    miner = read_keystore(keystore, PASSWORD)
    data = load_dataset(builtin_task("digits"))
    spec = infer_spec(Table(data.X_train, data.y_train), name="digits-deployed", defaults=QUICK_DEPLOY_DEFAULTS)
    bounty, fee = default_bounty(spec), client.deploy_fee()
    while client.account(keystore_address(keystore))["balance"] < bounty + fee + spec.bond_amount:
        client.mine(1)
    task_id = client.deploy(miner, spec, encode_evalset(data.X_test, data.y_test), bounty, fee)
    client.mine(1)
    before = client.task(task_id)["metrics"]["accuracy"]

    assert main(["wallet", "new", "--keystore", str(tmp_path / "me.json")]) == 0
    me = keystore_address(tmp_path / "me.json")
    client.send(miner, address_bytes(read_keystore(tmp_path / "me.json", PASSWORD).public), spec.bond_amount)
    client.mine(1)
    code, _, err = run(capsys, "update", "bond", "--node", client.url, "--keystore", str(tmp_path / "me.json"),
                       "--task", task_id[:12])
    assert code == 0, err
    client.mine(1 + spec.bond_maturity)
    assert client.account(me, task_id)["bond"] is not None and client.account(me)["bond"] is None

    params, _ = client.model_params(None, task_id)
    deltas = np.stack([train_update(spec, params, data.X_train, data.y_train, rng=np.random.default_rng(i))
                       for i in range(spec.round_blocks)])
    np.save(tmp_path / "updates.npy", deltas)
    first_model = client.model()["version"]
    result: dict[str, int] = {}
    submit = threading.Thread(target=lambda: result.setdefault("code", main([
        "update", "submit", "--node", client.url, "--keystore", str(tmp_path / "me.json"),
        "--task", "digits-deployed", "--file", str(tmp_path / "updates.npy"),
    ])))
    submit.start()
    try:
        wait_until(lambda: client.status()["mempool"] == 1 or not submit.is_alive(), SUBMIT_TIMEOUT_S,
                   what="the commitment")
        client.mine(1)
        while client.status()["height"] % spec.round_blocks:
            client.mine(1)  # to the round that reveals
        for _ in range(spec.round_blocks):  # all pooled before its first block; each block takes one
            wait_until(lambda: client.status()["mempool"] > 0 or not submit.is_alive(), SUBMIT_TIMEOUT_S,
                       what="a reveal in the pool")
            client.mine(1)
    finally:
        submit.join(SUBMIT_TIMEOUT_S)
    assert result["code"] == 0
    assert all(not c["unrevealed"] for c in client.account(me, task_id)["commitments"])
    shown = client.task(task_id)
    assert shown["version"] == 1 and client.model()["version"] == first_model
    assert shown["metrics"]["accuracy"] > before
    code, out, err = run(capsys, "model", "get", "--node", client.url, "--task", task_id[:12],
                         "--out", str(tmp_path / "deployed.npy"))
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "deployed.npy"), client.model_params(None, task_id)[0])
    assert not np.array_equal(np.load(tmp_path / "deployed.npy"), client.model_params()[0])
    np.savetxt(tmp_path / "x.csv", data.X_test[:5], delimiter=",")
    code, out, err = run(capsys, "model", "predict", "--node", client.url, "--task", "digits-deployed",
                         "--inputs", str(tmp_path / "x.csv"))
    assert code == 0, err
    assert out.split() == [str(p) for p in client.task_predict(task_id, data.X_test[:5])[0]]
    code, _, err = run(capsys, "update", "submit", "--node", client.url, "--keystore", str(tmp_path / "me.json"),
                       "--task", "no-such-task", "--file", str(tmp_path / "updates.npy"))
    assert code != 0 and "no-such-task is not a task of this chain" in err
