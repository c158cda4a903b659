"""The miner thread outlives a failing round: it logs, pauses and mines on.

::

    genesis - 1 - 2        (node a: the first template raises, the miner goes on)
"""

from __future__ import annotations

from typing import Any

import pytest

from node import mining
from tests.conftest import until
from tests.node.harness import Cluster, scenario

MINE_TIMEOUT_S = 30.0  # a retry pause plus two regtest blocks, on a loaded 2-core box


class TemplateFailure(Exception):
    """Stands in for any error while building a template (storage, mempool, consensus)."""


@pytest.fixture()
def first_template_fails(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the first ``make_template`` call raise; later calls build real templates."""
    calls: list[int] = []
    real = mining.make_template

    def flaky(node: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise TemplateFailure("injected: the first template cannot be built")
        return real(node)

    monkeypatch.setattr(mining, "make_template", flaky)
    return calls


@scenario
async def test_a_failing_template_does_not_kill_the_miner(cluster: Cluster, first_template_fails: list[int]) -> None:
    (a,) = await cluster.start_many(1, mine=True, byzantine_f=0)
    await until(lambda: a.chain.height >= 2, MINE_TIMEOUT_S, what="two blocks mined after the failed round")
    assert len(first_template_fails) >= 3
    assert a.miner._thread.is_alive()
