"""The peer-to-peer wing, behind :class:`~node.p2p.service.PeerService`.

``messages`` (the wire), ``session`` (tokens, the client, refusal codes),
``connections`` (slots, eviction, bans, the dialler) with ``addrman`` (the
address book) and ``netgroups`` (hosts and their groups), ``gossip``
(announce then fetch, address relay), ``sync`` and ``download`` (headers
first, then bodies), ``intake`` (a peer's block into the chain service),
``penalties`` (what misbehaviour costs), ``peerfiles`` (bans and addresses
saved in the datadir) and ``routes`` (/p2p/).

Only names that other wings use are re-exported here; the rest is private.
"""

from node.p2p.messages import MESSAGES, Message, MessageError, decode, encode
from node.p2p.penalties import BanList, Misbehaviour, PeerScore, penalty

__all__ = [
    "MESSAGES",
    "BanList",
    "Message",
    "MessageError",
    "Misbehaviour",
    "PeerScore",
    "decode",
    "encode",
    "penalty",
]
