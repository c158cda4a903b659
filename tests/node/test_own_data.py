"""A node trains on the participant's own file (``node run --train --data FILE``) and
follows rows appended to it while it runs, with no restart."""

from __future__ import annotations

import numpy as np
import pytest

from consensus.tx import Commit
from ml.datafile import Table
from ml.datasets import load_dataset
from ml.tabular import table_csv
from ml.tasks import builtin_task
from node.datafile import SEALED_FILE, DataSourceError
from tests.conftest import until
from tests.node.contrib import mine_settled
from tests.node.harness import Cluster, mine, scenario
from wallet import address_bytes

UPDATE_TIMEOUT_S = 30.0  # one local training run of 20 steps, on a loaded CI box


def digits_csv(rows: slice) -> str:
    data = load_dataset(builtin_task("digits"))
    return table_csv(Table(data.X_train[rows], data.y_train[rows]))


@scenario
async def test_appended_rows_reach_the_next_updates_without_a_restart(cluster: Cluster) -> None:
    path = cluster.base / "mine.csv"
    path.write_text(digits_csv(slice(0, 40)))
    node = await cluster.start("a", train=True, byzantine_f=0, data_file=path)
    trainer = node.trainer
    assert trainer.data is not None and trainer.data.rows == 40 and len(trainer.y) == 40
    assert (node.config.datadir / SEALED_FILE).exists()
    await mine(node, 1)  # the reward the trainer bonds with
    await until(lambda: len(node.mempool) > 0, UPDATE_TIMEOUT_S, what="the trainer's bond")

    more = digits_csv(slice(40, 70)).split("\n", 1)[1]  # the rows without the header
    with path.open("a") as handle:
        handle.write(more)
    await mine(node, 1)  # a new tip: the trainer's next step reads the file again
    await until(lambda: len(trainer.y) == 70, UPDATE_TIMEOUT_S, what="the appended rows")
    assert any(e.kind == "data" and "+30 rows" in e.message for e in node.events)
    np.testing.assert_array_equal(trainer.X[40:], load_dataset(builtin_task("digits")).X_train[40:70])
    own = address_bytes(node.keypair.public)

    def committed() -> bool:  # pooled, or already in a block
        on_chain = any(address == own for _, address in node.chain.state.task.commitments)
        return on_chain or any(isinstance(e.tx, Commit) for e in node.mempool.pending(own))

    last = node.chain.height + node.chain.task.bond_maturity + 2
    while not committed():  # once the bond is mature: a round's updates on 70 rows
        assert node.chain.height < last, "no commitment to updates trained on the grown data"
        await mine_settled(node, UPDATE_TIMEOUT_S)


@scenario
async def test_a_file_that_does_not_fit_the_task_stops_the_start(cluster: Cluster) -> None:
    path = cluster.base / "bad.csv"
    text = digits_csv(slice(0, 3)).splitlines()
    text[2] = text[2].rsplit(",", 1)[0]  # the second example loses its label
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(DataSourceError, match=r"bad.csv: line 3: 64 values, expected 65.*label missing"):
        await cluster.start("a", train=True, byzantine_f=0, data_file=path)


@scenario
async def test_train_names_the_task_by_its_id(cluster: Cluster) -> None:
    from node.taskfile import TaskFileError, genesis_task_id

    with pytest.raises(TaskFileError, match="is not a task of this chain"):
        await cluster.start("a", train=True, train_task="00000000")
    node = await cluster.start("b", train=True, byzantine_f=0)
    task_id = genesis_task_id(node.chain)
    await cluster.stop_node(node)
    again = await cluster.start("b", train=True, byzantine_f=0, train_task=task_id[:10].upper())
    assert again.trainer.task_id == task_id
    assert any(e.kind == "trainer" and f"({task_id[:12]}…)" in e.message for e in again.events)


@scenario
async def test_a_bad_eval_file_stops_the_start(cluster: Cluster) -> None:
    from ml.datafile import DataFileError

    path = cluster.base / "eval.csv"
    path.write_text(digits_csv(slice(0, 2)).replace("\n", "\n\n", 1).rsplit(",", 1)[0] + ",12\n")
    with pytest.raises(DataFileError, match=r"--eval .*eval.csv: line 4, column 65 \('label'\): class 12"):
        await cluster.start("a", eval_file=path)
    path.write_text(digits_csv(slice(0, 5)))
    node = await cluster.start("b", eval_file=path)
    assert node.evaluator.dataset is not None and node.evaluator.dataset.X_test.shape == (5, 64)
