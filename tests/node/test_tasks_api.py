"""GET /api/tasks, GET /api/tasks/{id}, POST /api/tasks/{id}/predict on a live regtest node:
the chain's first task by its id (the genesis TaskTx's txid), its figures, and
inference with its model at any height, each answer checked against the OpenAPI document."""

from __future__ import annotations

import numpy as np

from consensus.header import hash_hex
from consensus.tx import txid
from ml.datasets import load_dataset
from tests.node.contrib import mine_settled
from tests.node.harness import Cluster, get_json, http, mine, scenario
from tests.node.test_openapi import check_json, fetch_document

UPDATE_TIMEOUT_S = 30.0  # the trainer's first local run, on a loaded CI box
MOVED_BY = 40  # blocks: bond, maturity, a round to commit in and the one that reveals (digits: W = 8)


@scenario
async def test_the_first_task_is_listed_shown_and_predicts_at_any_height(cluster: Cluster) -> None:
    node = await cluster.start("a", train=True, byzantine_f=0)
    while node.chain.state.model_version == 0:  # it bonds, commits, reveals; a round's end moves the model
        assert node.chain.height < MOVED_BY, "the trainer's updates never moved the model"
        await mine_settled(node, UPDATE_TIMEOUT_S)
    tip = node.chain.height
    task_id = hash_hex(txid(node.chain.genesis.tx_bytes[0]))
    doc = await fetch_document(node)
    test = load_dataset(node.chain.task)
    rows = test.X_test[:50].astype(float).tolist()
    async with http() as session:
        status, listing = await get_json(session, f"{node.url}/api/tasks")
        assert status == 200
        check_json(doc, "/api/tasks", "get", 200, listing)
        (task,) = listing["tasks"]
        assert (task["id"], task["name"], task["status"]) == (task_id, "digits", "training")
        assert task["height"] == tip and 0.0 < task["metrics"]["accuracy"] <= 1.0 and task["label"].startswith("acc")

        status, shown = await get_json(session, f"{node.url}/api/tasks/{task_id.upper()}?height=1")
        assert status == 200 and shown["height"] == 1
        check_json(doc, "/api/tasks/{task_id}", "get", 200, shown)
        assert shown["spec"] == node.chain.task.to_dict()

        answers = {}
        for height in (0, tip):
            url = f"{node.url}/api/tasks/{task_id}/predict?height={height}"
            async with session.post(url, json={"inputs": rows}) as resp:
                assert resp.status == 200
                body = await resp.json()
            check_json(doc, "/api/tasks/{task_id}/predict", "post", 200, body)
            assert body["height"] == height and len(body["predictions"]) == len(rows)
            answers[height] = body["predictions"]
            async with session.post(f"{node.url}/api/predict?height={height}", json={"inputs": rows}) as resp:
                assert (await resp.json())["predictions"] == answers[height]  # the same model
        assert answers[0] != answers[tip]  # the model moved between the heights
        async with session.get(f"{node.url}/") as resp:
            page = await resp.text()
        tasks_table = page.split('id="tasks"')[1].split("</table>")[0]
        assert f'href="/api/tasks/{task_id}"' in tasks_table and "<td>digits</td>" in tasks_table
        assert task["label"].split()[0] in tasks_table
        accuracy = float(np.mean(np.asarray(answers[tip]) == test.y_test[:50]))
        assert accuracy > float(np.mean(np.asarray(answers[0]) == test.y_test[:50]))


@scenario
async def test_bad_task_requests_get_a_reason(cluster: Cluster) -> None:
    node = await cluster.start("a")
    await mine(node, 1)
    task_id = hash_hex(txid(node.chain.genesis.tx_bytes[0]))
    doc = await fetch_document(node)
    async with http() as session:
        for path in (f"/api/tasks/{'ab' * 32}", "/api/tasks/nope"):
            status, body = await get_json(session, node.url + path)
            assert status == 404 and "GET /api/tasks lists them" in body["error"]
            check_json(doc, "/api/tasks/{task_id}", "get", 404, body)
        status, body = await get_json(session, f"{node.url}/api/tasks?height=7")
        assert status == 404 and "not in 0..1" in body["error"]
        async with session.post(f"{node.url}/api/tasks/{'cd' * 32}/predict", json={"inputs": [[0.0] * 64]}) as resp:
            assert resp.status == 404
        narrow = {"inputs": [[0.0] * 63]}
        async with session.post(f"{node.url}/api/tasks/{task_id}/predict", json=narrow) as resp:
            assert resp.status == 422
            body = await resp.json()
        check_json(doc, "/api/tasks/{task_id}/predict", "post", 422, body)
        assert "64" in body["error"]
