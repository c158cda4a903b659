"""Every resource limit of a node, named, with the reason for its number.

These are policy, not consensus: a node may change any of them without
forking. Each body cap is derived from the field limits of its message
(``tests/unit/test_messages.py`` checks that the largest valid message of
each kind fits its cap), so the two can never disagree.
"""

from __future__ import annotations

from consensus.caps import MAX_BLOCK_BYTES, MAX_TX_BYTES
from consensus.header import HEADER_SIZE

KIB = 1024
MIB = 1024 * KIB

# -- protocol -----------------------------------------------------------------------------
PROTOCOL_VERSION = 2  # bumped on any incompatible change of a /p2p/ message (2: session tokens)
MIN_PROTOCOL_VERSION = 2  # the oldest peer version this node still speaks to (1 had no session)
USER_AGENT = "gradchain/0.1"  # sent in the handshake; shows in peer lists and logs

# -- message fields -------------------------------------------------------------------------
HASH_BYTES = 32  # block hashes and txids are sha256d digests
MAGIC_BYTES = 4  # network magic, as in ChainParams.magic
MAX_HEADERS_PER_MESSAGE = 2000  # Bitcoin's figure: 160 KB of headers, one round trip per 2000 blocks
MAX_LOCATOR_HASHES = 64  # a dense-then-exponential locator reaches any fork in 2**50 blocks
MAX_BLOCKS_PER_REQUEST = 16  # Bitcoin's blocks-in-flight per peer: enough to keep the pipe full
MAX_INV_PER_ANNOUNCE = 1000  # one announce carries a full mempool burst; 1000 * 32 B = 32 KB of hashes
MAX_TXS_PER_REQUEST = MAX_INV_PER_ANNOUNCE  # we ask for at most what one announce advertised
MAX_ADDRS_PER_MESSAGE = 1000  # Bitcoin's addr cap: plenty to learn a network, small to parse
MAX_ADDRS_IN_HANDSHAKE = 32  # a few peers in the reply let a new node fan out without a second call
MAX_URL_CHARS = 128  # "http://" + a DNS name or IP literal + ":65535"; longer is never a real listen address
MAX_USER_AGENT_CHARS = 64  # enough for name/version (platform); logs stay one line

# -- body caps per /p2p/ route (bytes, checked before any decoding) ---------------------------
MSGPACK_ARRAY_OVERHEAD = 5  # array32 header, the largest an array header can be
MSGPACK_BIN_OVERHEAD = 5  # bin32 header, the largest a bin header can be
MSGPACK_STR_OVERHEAD = 5  # str32 header
MSGPACK_INT_MAX = 9  # uint64: marker byte + 8
MAX_HANDSHAKE_BYTES = 8 * KIB  # fixed fields, a URL, a user agent and a few addresses
MAX_ANNOUNCE_BYTES = 2 * MAX_INV_PER_ANNOUNCE * (HASH_BYTES + 2) + 64  # two full hash lists
MAX_GET_HEADERS_BYTES = MAX_LOCATOR_HASHES * (HASH_BYTES + 2) + HASH_BYTES + 64  # locator + stop
MAX_HEADERS_BYTES = MAX_HEADERS_PER_MESSAGE * (HEADER_SIZE + 2) + 64  # 2000 bin8-framed headers
MAX_GET_BLOCKS_BYTES = MAX_BLOCKS_PER_REQUEST * (HASH_BYTES + 2) + 64  # 16 hashes
# One response holds at most 32 MiB: always room for one block of the largest
# consensus size, and several when blocks are small. 16 full blocks (384 MiB)
# in one body would pin that much memory per peer, so the responder sends the
# leading blocks that fit and the requester asks again for the rest.
MAX_BLOCKS_REPLY_BYTES = 32 * MIB
MAX_GET_TXS_BYTES = MAX_TXS_PER_REQUEST * (HASH_BYTES + 2) + 64  # a full announce's txids
MAX_TXS_REPLY_BYTES = 16 * MIB  # two of the largest updates; the responder trims, the requester re-asks
MAX_ADDR_BYTES = MAX_ADDRS_PER_MESSAGE * (MAX_URL_CHARS + 2) + 64  # 1000 URLs of the longest form
MAX_API_BODY_BYTES = 2 * MAX_TX_BYTES + 64 * KIB  # POST /api/tx: one max tx in hex (two characters a byte) plus JSON
# Predict bodies parsed at once: each parse holds ~10x its body in Python floats for a moment.
MAX_CONCURRENT_PREDICT_PARSES = 2

# The largest body aiohttp must accept on any route (``client_max_size``).
MAX_REQUEST_BODY_BYTES = max(MAX_BLOCKS_REPLY_BYTES, MAX_TXS_REPLY_BYTES, MAX_API_BODY_BYTES)
assert MAX_BLOCKS_REPLY_BYTES >= MAX_BLOCK_BYTES + 64, "a Blocks response must fit one max-size block"
assert MAX_TXS_REPLY_BYTES >= MAX_TX_BYTES + 64, "a Txs response must fit one max-size transaction"

# -- inbound HTTP connections (node/listener.py) ---------------------------------------------
MAX_CONNECTIONS = 512  # all open inbound connections: far below a 1024 fd limit, room for peers and storage
MAX_CONNECTIONS_PER_HOST = 32  # one address: a browser (6), a peer's client pool (16), a CLI; not a flood
LISTEN_BACKLOG = 128  # connections the kernel queues before the node accepts them (aiohttp's default)
HEADER_TIMEOUT_S = 20.0  # a request head arrives in milliseconds; > aiohttp clients' 15 s pooled keep-alive
BODY_TIMEOUT_BASE_S = 10.0  # any body may take this long, plus the time below per byte
MIN_BODY_BYTES_PER_S = 64 * KIB  # 0.5 Mbit/s: a 32 MiB body has ~9 minutes; a trickle is cut off

# -- peers ----------------------------------------------------------------------------------
MAX_OUTBOUND_PEERS = 8  # Bitcoin's full-relay outbound count: enough to resist eclipse on a testnet
MAX_INBOUND_PEERS = 117  # Bitcoin's 125 total minus outbound; a laptop serves that many easily
MAX_SESSIONS = 4096  # session tokens kept, one per URL we know or were told of: a handshake flood is bounded
MAX_CALLBACKS_IN_FLIGHT = MAX_OUTBOUND_PEERS  # unproven handshakes we are calling back at once
MAX_REQUESTS_PER_PEER = 16  # our open connections to one peer; under MAX_CONNECTIONS_PER_HOST on its side
# A peer's announces we handle at once (each may wait: behind its earlier block fetch, or for a
# header sync when it claims to be ahead); more are dropped (their blocks left to header sync)
# instead of queueing ~70 KB each while the peer stalls. A 16,000-tx burst fits.
MAX_ANNOUNCES_PENDING = MAX_REQUESTS_PER_PEER
INBOUND_PROTECTED_BY_BLOCKS = 4  # inbound peers that last gave us new blocks are never evicted
INBOUND_PROTECTED_BY_TXS = 4  # nor those that last gave us new txs: an attacker cannot crowd out useful peers
ADDR_RELAY_FANOUT = 2  # Bitcoin's: a fresh address goes to two peers, so gossip costs O(peers), not O(peers^2)
ADDR_PROCESS_PER_S = 0.1  # Bitcoin's addr rate limit per peer (a burst of MAX_ADDRS_PER_MESSAGE first)
ADDR_REPLY_SAMPLE = 100  # addresses in the answer to a peer's first Addr
HANDSHAKE_TIMEOUT_S = 10.0  # a live peer answers a handshake in well under a second on any link
REQUEST_TIMEOUT_S = 30.0  # a small /p2p/ request (announce, headers) that takes longer is a dead peer
PING_INTERVAL_S = 60.0  # how often an idle peer is asked for its tip, to notice it went away

# -- headers-first sync -----------------------------------------------------------------------
# Headers are stored only for a branch that comes within this many blocks' work of our tip
# (Bitcoin's anti-DoS threshold): a branch of cheap old-difficulty headers costs us nothing.
ANTI_DOS_WORK_BLOCKS = 144
MAX_PRESYNC_BATCHES = 1000  # batch-end hashes kept while a low-work branch proves its work: 2M headers, 32 KB

# -- block download -------------------------------------------------------------------------
MAX_BLOCKS_IN_FLIGHT_PER_PEER = MAX_BLOCKS_PER_REQUEST  # one outstanding request per peer
MAX_BLOCKS_IN_FLIGHT_TOTAL = 4 * MAX_BLOCKS_PER_REQUEST  # bounds download memory to ~64 full blocks
BLOCK_STALL_TIMEOUT_S = 60.0  # a peer that delivers nothing of a block request for a minute is stalling
BLOCK_DOWNLOAD_TIMEOUT_S = 600.0  # a whole 32 MiB response on a slow (0.5 Mbit/s) link

# -- misbehaviour ---------------------------------------------------------------------------
BAN_THRESHOLD = 100  # Bitcoin's: one invalid block bans, a few malformed messages do too
BAN_DURATION_S = 24 * 60 * 60  # Bitcoin's default -bantime: long enough to outlast a restart loop
MAX_BANNED_PEERS = 10_000  # the ban list's bound; the soonest-expiring ban is forgotten first

# Relayed txs refused for tip-dependent reasons (forgiven) before the relayer is charged:
RELAY_WASTE_BURST_BYTES = 4 * MAX_TX_BYTES  # four of the largest updates, or thousands of transfers, after a reorg
RELAY_WASTE_BYTES_PER_S = 64 * KIB  # a peer may keep relaying stale txs at 0.5 Mbit/s, not faster

# -- mempool --------------------------------------------------------------------------------
MEMPOOL_MAX_TXS = 5000  # hundreds of blocks' worth of transfers; keeps select() fast in Python
MEMPOOL_MAX_BYTES = 256 * MIB  # ~30 full-size updates of a large model, or thousands of small ones
MEMPOOL_MAX_PER_SENDER = 25  # Bitcoin's ancestor limit: one sender cannot crowd out the rest
MEMPOOL_EXPIRY_S = 2 * 60 * 60  # an update older than two hours is stale under any sane window
