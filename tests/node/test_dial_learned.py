"""``NodeConfig(dial_learned=False)``: a node dials its seeds only, so a built topology holds.

Benchmarks measure propagation over a line; with address gossip every node
learns every other and, left alone, dials them until the line is a mesh.
"""

from __future__ import annotations

from tests.conftest import until
from tests.node.harness import Cluster, connect_line, scenario

CONNECTOR_PASSES = 4  # connector passes watched after every node knows every address (0.5 s each)


@scenario
async def test_a_line_stays_a_line_while_addresses_spread(cluster: Cluster) -> None:
    """n0 - n1 - n2 - n3: each learns an address beyond its neighbours, and dials none.

    Every connector pass of every node is checked while it runs: it never
    picks a learned address, and the links stay the line's.
    """
    nodes = await cluster.start_many(4, dial_learned=False)
    await connect_line(nodes)
    urls = [node.url for node in nodes]
    passes = [0] * len(nodes)
    for index, node in enumerate(nodes):
        choose = node.peers.conns.dial_candidates

        def checked(now: float, index: int = index, choose: object = choose) -> list[str]:
            picked = choose(now)  # type: ignore[operator]
            assert set(picked) <= set(nodes[index].peers.seeds), f"n{index} dialled a learned address"
            passes[index] += 1
            return picked  # type: ignore[no-any-return]

        node.peers.conns.dial_candidates = checked  # type: ignore[method-assign]
    neighbours = [{urls[j] for j in (i - 1, i + 1) if 0 <= j < len(nodes)} for i in range(len(nodes))]
    await until(lambda: all(set(node.peers.known) - neighbours[i] - {node.url} for i, node in enumerate(nodes)),
                20, what="every node to learn an address beyond its neighbours")
    seen = min(passes)
    await until(lambda: min(passes) >= seen + CONNECTOR_PASSES, 20, what="more connector passes")
    for index, node in enumerate(nodes):
        assert set(node.peers.peers) == neighbours[index], f"n{index} peers {sorted(node.peers.peers)}"


@scenario
async def test_by_default_learned_addresses_are_dialled(cluster: Cluster) -> None:
    """The same line with the default config: n0 ends up linked beyond its one neighbour."""
    nodes = await cluster.start_many(4)
    await connect_line(nodes)
    await until(lambda: len(nodes[0].peers.peers) > 1, 30, what="n0 to dial an address it learned")
