"""The peer-to-peer wing: wire messages, misbehaviour scores, (later) peers and sync.

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
