"""The public API fuzzed from its own description: schemathesis against a live regtest node.

The node runs in a thread of this process with a chain of a few blocks
(updates, a transfer), so lookups by height, hash, txid and address can hit
as well as miss. schemathesis reads ``/api/openapi.json`` and, for every
operation, sends generated requests, valid and invalid, including to the
cookie-protected control routes (with the token). Every answer must be
non-5xx, match its documented status, content type and schema, and arrive
within ``RESPONSE_DEADLINE_S`` (no hang).
"""

from __future__ import annotations

import collections
import pathlib
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from consensus.tx import Transfer, encode_tx, sign_tx
from node.config import NodeConfig
from node.service import Node
from tests.node.harness import mine, node_key
from tests.node.threaded import NodeThread
from tests.reliability import sized
from wallet import address_bytes

EXAMPLES = sized(40, 1000)  # generated requests per operation
RESPONSE_DEADLINE_S = 20.0  # the slowest honest answer (predict over a full batch) takes well under 1 s



@pytest.fixture(scope="module")
def api_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeThread]:
    base: pathlib.Path = tmp_path_factory.mktemp("api")
    thread = NodeThread(NodeConfig(datadir=base / "n", network="regtest", port=0, keypair=node_key("api")))
    node = thread.node
    try:
        thread.call(mine(node, 3))
        to = address_bytes(node_key("recipient").public)
        tx = sign_tx(Transfer(node.keypair.public, 0, to, 1000, 1), node.keypair, node.chain.signing_tag)
        thread.call(node.submit_tx(encode_tx(tx), source=None))
        thread.call(mine(node, 1))
        yield thread
    finally:
        thread.stop()


# Operations whose validity a schema cannot express: for these a schema-valid request may
# still be refused with a 4xx (positive_data_acceptance would call that a failure).
SEMANTIC_CHECKS = {
    "POST /api/tx": "a valid signature and nonce",
    "GET /api/accounts/{address}": "a bech32m checksum",
    "POST /api/peers": "that a peer answers at the URL",
}


def loopback_only(node: Node, dialled: list[str]) -> None:
    """Generated peer URLs are never dialled: the node may only reach loopback addresses here.

    Both ways a URL is dialled are guarded: the route's own dial and the
    connector's later dials of the seed the route added.
    """
    conns = node.peers.conns
    connect = conns.connect

    async def guarded(url: str, *, outbound: bool = True) -> object:
        dialled.append(url)
        if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
            return None
        return await connect(url, outbound=outbound)

    conns.connect = guarded


MINE_AT_MOST = 3  # blocks per generated POST /api/mine: 1000 a request would grow the chain for minutes


def cheap_mining(case: schemathesis.Case) -> schemathesis.Case:
    """A valid POST /api/mine asks for few blocks (the 1..1000 bound itself is fuzzed by invalid bodies)."""
    body = case.body
    if case.operation.label == "POST /api/mine" and isinstance(body, dict):
        blocks = body.get("blocks")
        if isinstance(blocks, int | float) and not isinstance(blocks, bool) and 1 <= blocks <= 1000:
            body["blocks"] = min(int(blocks), MINE_AT_MOST)
    return case


def fuzz_operation(operation: schemathesis.APIOperation, mode: GenerationMode, headers: dict[str, str],
                   tried: collections.Counter[str]) -> str | None:
    """Run ``EXAMPLES`` generated cases of one operation; the shrunk failure, if any."""

    @given(case=operation.as_strategy(generation_mode=mode).map(cheap_mining))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        tried[operation.label] += 1
        excluded = [positive_data_acceptance] if operation.label in SEMANTIC_CHECKS else []
        case.call_and_validate(headers=headers, timeout=RESPONSE_DEADLINE_S, excluded_checks=excluded)

    try:
        run()
    except Unsatisfiable:  # no request can break this operation's schema (it takes no parameters)
        return None
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis failures (a group of them), a timeout
        return f"{operation.label} ({mode.value}): {type(exc).__name__}: {str(exc)[:1500]}"
    return None


def test_api_conforms_to_its_description(api_node: NodeThread) -> None:
    dialled: list[str] = []
    loopback_only(api_node.node, dialled)
    schema = schemathesis.openapi.from_url(f"{api_node.node.url}/api/openapi.json")
    token = api_node.node.config.cookie_path.read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    tried: collections.Counter[str] = collections.Counter()
    failures = [
        failure
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if (failure := fuzz_operation(operation, mode, headers, tried)) is not None
    ]
    print(f"schemathesis: {sum(tried.values())} requests over {len(operations)} operations "
          f"({len(dialled)} peer URLs offered, none outside loopback dialled)")
    assert not failures, "\n\n".join(failures)
    assert all(tried[op.label] > 0 for op in operations), tried
