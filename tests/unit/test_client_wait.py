"""`node.client`: the polling helper scripts use, and reveals sent again without uploading twice."""

from __future__ import annotations

import dataclasses

import pytest

from node.client import ApiError, wait_for


def test_returns_the_first_truthy_value_treating_an_unreachable_node_as_not_ready() -> None:
    answers: list[object] = [ApiError(0, "connection refused"), None, 0, {"height": 7}, {"height": 8}]
    calls = 0

    def ready() -> object:
        nonlocal calls
        answer = answers[calls]
        calls += 1
        if isinstance(answer, ApiError):
            raise answer
        return answer

    assert wait_for("the node", ready, timeout_s=60, poll_s=0) == {"height": 7}
    assert calls == 4  # stopped at the first truthy answer


def test_gives_up_after_the_timeout_and_names_what_it_waited_for() -> None:
    calls = 0

    def never() -> None:
        nonlocal calls
        calls += 1

    with pytest.raises(TimeoutError, match="waiting for the late joiner to sync"):
        wait_for("the late joiner to sync", never, timeout_s=0, poll_s=0)
    assert calls == 1  # asked once before giving up


def test_other_errors_are_not_swallowed() -> None:
    def broken() -> None:
        raise KeyError("height")

    with pytest.raises(KeyError):
        wait_for("the node", broken, timeout_s=60, poll_s=0)


def test_reveals_the_node_still_holds_are_looked_up_not_uploaded_again() -> None:
    """At each block the client sends again the reveals the chain has not taken; one the node still
    pools is only looked up (an update can be megabytes), one it dropped is uploaded again."""
    import numpy as np

    from consensus.tx import encode_tx
    from ml.tasks import builtin_task
    from node.client import NodeClient
    from node.contributor import Contributor, KeyStatus
    from wallet import keypair_from_seed

    task = builtin_task("digits")
    me = Contributor(keypair_from_seed(b"\x01" * 32), task, b"\x00" * 4, b"\x02" * 32)
    status = KeyStatus(height=17, round=2, balance=0, next_nonce=0, bonded=True, mature=True, bond_pending=False,
                       committed=False, unrevealed=(), reveal_pending=False)
    me.commit(status, b"\x03" * 32, [np.full(task.param_count, i + 1, dtype=np.float32) for i in range(3)])

    class Node(NodeClient):
        uploads: list[int]
        held: set[str]

        def submit_raw_tx(self, raw: bytes) -> str:
            self.uploads.append(len(raw))
            return raw[:4].hex() + str(len(self.uploads))

        def tx(self, tx_id: str) -> dict[str, object]:
            if tx_id not in self.held:
                raise ApiError(404, "unknown transaction")
            return {"status": "mempool"}

    node = Node("http://127.0.0.1:1")
    node.uploads, node.held = [], set()
    reveal_round = dataclasses.replace(status, height=25, round=3, unrevealed=(0, 1, 2))
    first, refused = node.pool_reveals(me, reveal_round)
    assert sorted(first) == [0, 1, 2] and not refused and len(node.uploads) == 3
    assert node.uploads[0] == len(encode_tx(me.plans[2][0]))
    node.held = {first[0], first[2]}  # the node dropped reveal 1
    again, _ = node.pool_reveals(me, dataclasses.replace(reveal_round, height=26), first)
    assert again[0] == first[0] and again[2] == first[2] and again[1] != first[1]
    assert len(node.uploads) == 4  # only the dropped one went up again
