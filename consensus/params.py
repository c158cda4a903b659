"""Per-network consensus parameters: every number the rules use, with its unit.

Like Bitcoin Core's chainparams, each network (main, testnet, regtest) is one
frozen :class:`ChainParams` instance, so a rule never hard-codes a number and a
test can build a variant with :func:`dataclasses.replace` or
:func:`with_block_time`.

Difficulty choices
------------------
A target ``t`` costs on average ``2**256 / (t + 1)`` hashes per block.

* REGTEST: bits ``0x207fffff``, target ~2**255: every other hash passes, so
  tests mine a block in a couple of hashes. ``retarget`` is off (bits always
  equal ``genesis_bits``), like Bitcoin's regtest ``fPowNoRetargeting``.
* TESTNET: sized for three local nodes on two SHA-NI cores with the numba
  core, ~40 MH/s in total, at one block every 5 s, i.e. ~2e8 hashes per
  block: ``2**256 // 2e8`` is bits ``0x1d15798e``. The ASERT half-life is
  5 minutes (60 blocks): a hashrate estimate off by 2x is corrected within
  5 minutes of wall time, while the per-block difficulty noise stays within
  the bounds the retarget tests check. The future-time allowance is 60 s, so
  a miner who stamps the latest time the rules allow eases the difficulty by
  at most ``2**(60/300)``, about 15 %.
* MAIN: bits ``0x1d00ffff`` (Bitcoin's difficulty 1, ~4.3e9 hashes), one
  block a minute at ~72 MH/s, a handful of hosts. The half-life is 6 hours
  (360 blocks, close to the 288 blocks Bitcoin Cash chose): with the usual
  2-hour future allowance, a miner stamping blocks in the future eases the
  difficulty by at most ``2**(2/6)``, about 26 %, once.

``pow_limit`` is the easiest target ASERT may reach: a floor on the work a
header costs, so that a shrinking network can always recover, yet spamming
headers is never free (2**24 hashes on main, 2**16 on testnet).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from consensus.header import is_u32

MAGIC_SIZE = 4  # bytes at the start of the p2p handshake
TARGET_SPACE = 2**256  # targets are 256-bit numbers

# Times, in seconds.
MINUTE_S = 60
HOUR_S = 60 * MINUTE_S
MAX_FUTURE_BLOCK_TIME_S = 2 * HOUR_S  # Bitcoin's rule; main keeps it
TESTNET_MAX_FUTURE_BLOCK_TIME_S = MINUTE_S  # loopback / NTP clocks agree within seconds
MEDIAN_TIME_SPAN = 11  # blocks whose median a new block's time must exceed


@dataclass(frozen=True, slots=True)
class ChainParams:
    """The consensus constants of one network.

    Attributes
    ----------
    name:
        "main", "testnet" or "regtest".
    chain_id:
        u32 committed into every signature digest, so a transaction signed for
        one network is invalid on another.
    magic:
        4 bytes a peer must send in the p2p handshake.
    pow_limit:
        The easiest (largest) target any block may carry.
    genesis_bits:
        Compact target of the genesis block, the ASERT anchor.
    target_block_time_s:
        Seconds between blocks that the retarget aims at.
    asert_half_life_s:
        Seconds of schedule drift that double or halve the target.
    retarget:
        False pins every block's bits to ``genesis_bits`` (regtest).
    max_future_block_time_s:
        How far, in seconds, a block's time may run ahead of the receiving
        node's clock.
    median_time_span:
        Number of previous blocks whose median time a new block must exceed.
    default_port:
        TCP port a node listens on when none is given.
    """

    name: str
    chain_id: int
    magic: bytes
    pow_limit: int
    genesis_bits: int
    target_block_time_s: int
    asert_half_life_s: int
    retarget: bool
    max_future_block_time_s: int
    median_time_span: int
    default_port: int

    def __post_init__(self) -> None:
        _check_u32("chain_id", self.chain_id)
        _check_u32("genesis_bits", self.genesis_bits)
        if len(self.magic) != MAGIC_SIZE:
            raise ValueError(f"magic must be {MAGIC_SIZE} bytes, got {len(self.magic)}")
        if not 0 < self.pow_limit < TARGET_SPACE:
            raise ValueError(f"pow_limit must be in (0, 2**256), got {self.pow_limit:#x}")
        for field in (
            "target_block_time_s",
            "asert_half_life_s",
            "max_future_block_time_s",
            "median_time_span",
        ):
            _check_positive(field, getattr(self, field))
        if self.median_time_span % 2 == 0:
            raise ValueError("median_time_span must be odd so the median is one block's time")
        if not 0 < self.default_port <= 0xFFFF:
            raise ValueError(f"default_port must be a TCP port, got {self.default_port}")


def _check_u32(field: str, value: int) -> None:
    if not is_u32(value):
        raise ValueError(f"{field} must be a u32, got {value!r}")


def _check_positive(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{field} must be a positive int, got {value!r}")


MAIN = ChainParams(
    name="main",
    chain_id=0x67726401,  # "grd" + 1
    magic=b"\xf9grd",
    pow_limit=0xFFFF << 216,  # bits 0x1e00ffff: at least 2**24 hashes a block
    genesis_bits=0x1D00FFFF,  # ~2**32 hashes: 60 s at ~72 MH/s
    target_block_time_s=MINUTE_S,
    asert_half_life_s=6 * HOUR_S,
    retarget=True,
    max_future_block_time_s=MAX_FUTURE_BLOCK_TIME_S,
    median_time_span=MEDIAN_TIME_SPAN,
    default_port=8733,
)

TESTNET = ChainParams(
    name="testnet",
    chain_id=0x67726402,
    magic=b"\xfaGRD",
    pow_limit=0xFFFF << 224,  # bits 0x1f00ffff: at least 2**16 hashes a block
    # 2**256 // (40 MH/s * 5 s): ~2e8 hashes a block. Measured: three local
    # nodes on two SHA-NI cores hash ~50 MH/s together (the numba core does
    # ~30 MH/s a core), so the first blocks come near the 5 s target.
    genesis_bits=0x1D15798E,
    target_block_time_s=5,
    # Five minutes (60 blocks): a laptop testnet's hashrate swings by whole
    # factors as nodes join and leave; a longer half-life would leave it many
    # minutes off target. The cost is a noisier difficulty, which a testnet
    # can afford.
    asert_half_life_s=5 * MINUTE_S,
    retarget=True,
    max_future_block_time_s=TESTNET_MAX_FUTURE_BLOCK_TIME_S,
    median_time_span=MEDIAN_TIME_SPAN,
    default_port=18733,
)

REGTEST = ChainParams(
    name="regtest",
    chain_id=0x67726403,
    magic=b"\xfbrgt",
    pow_limit=0x7FFFFF << 232,  # bits 0x207fffff: every other hash passes
    genesis_bits=0x207FFFFF,
    target_block_time_s=5,
    asert_half_life_s=10 * MINUTE_S,  # unused while retarget is False
    retarget=False,
    max_future_block_time_s=MAX_FUTURE_BLOCK_TIME_S,
    median_time_span=MEDIAN_TIME_SPAN,
    default_port=28733,
)

NETWORKS: dict[str, ChainParams] = {p.name: p for p in (MAIN, TESTNET, REGTEST)}


def get_params(name: str) -> ChainParams:
    """Return the parameters of network ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not a known network; the message lists the valid ones
        so a CLI can show it as is.
    """
    try:
        return NETWORKS[name]
    except KeyError:
        valid = ", ".join(sorted(NETWORKS))
        raise ValueError(f"unknown network {name!r}; choose one of: {valid}") from None


def with_block_time(params: ChainParams, seconds: int) -> ChainParams:
    """Return ``params`` with ``target_block_time_s`` set to ``seconds``.

    The genesis task fixes the block time of a chain; the chain core applies
    it here. The half-life stays in seconds of wall time, so the speed at
    which the difficulty follows hashrate (and the bound on what a future
    timestamp can gain) does not change with the block time.
    """
    return dataclasses.replace(params, target_block_time_s=seconds)
