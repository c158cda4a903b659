"""Every consensus cap, named once, with the reason for its number.

A block or transaction over one of these is invalid on every node, so each
is checked twice by the same constant: by the decoders before they parse a
peer's bytes (:func:`consensus.block.decode_block`,
:func:`consensus.tx.decode_tx`), and by
:func:`consensus.transition.validate_block` on the encoded size of every
block, including one this node built itself, which therefore never connects
a block its peers would refuse.

A few caps belong to ml, which sits below consensus and validates tasks and
update encodings on its own (:data:`MAX_UPDATES_PER_BLOCK`,
:data:`MAX_UPDATE_BYTES`, :data:`MAX_UPDATE_PARAMS`); they are imported here
so this file lists every number a block is judged by. Policy caps (what one
node relays, pools or mines) live in ``node/limits.py`` and are derived from
these; ``tests/unit/test_caps.py`` walks every task bound against every cap.
"""

from __future__ import annotations

from ml.codec import MAX_UPDATE_BYTES as MAX_UPDATE_BYTES
from ml.codec import MAX_UPDATE_PARAMS as MAX_UPDATE_PARAMS
from ml.evalset import MAX_EVAL_BYTES as MAX_EVAL_BYTES
from ml.evalset import MAX_EVAL_ROWS as MAX_EVAL_ROWS
from ml.tasks import MAX_ROUND_BLOCKS as MAX_ROUND_BLOCKS
from ml.tasks import MAX_ROUND_PAYOUTS as MAX_ROUND_PAYOUTS
from ml.tasks import MAX_UPDATES_PER_BLOCK as MAX_UPDATES_PER_BLOCK
from ml.tasks import TaskSpec

KIB = 1024
MIB = 1024 * KIB

# -- blocks ---------------------------------------------------------------------------------
MAX_BLOCK_BYTES = 24 * MIB  # an encoded block: a few full-size updates of a large model
MAX_BLOCK_TXS = 10_000  # transactions in one block: thousands of transfers, far above any update count
# -- transactions ---------------------------------------------------------------------------
MAX_TX_BYTES = 8 * MIB  # an encoded transaction: one update of the largest model a task may declare
# the coinbase pays the miner and, in a round's last block, at most every update of the round
MAX_PAYOUTS = MAX_ROUND_PAYOUTS + 1
MAX_COMMIT_HASHES = MAX_ROUND_BLOCKS  # a commitment covers at most one update per block of a round
MAX_COINBASE_EXTRA = 32  # coinbase bytes of the miner's own: an extra-nonce and a short tag
MAX_AMOUNT = 2**63 - 1  # any amount or balance: fits the state root's u64 and storage's signed i64
# -- tasks deployed as contracts ------------------------------------------------------------------
# Every block runs every open task (its vote, its round's close, its target
# check on the evaluation set), so their number is what a deployer with coins
# could make every node do; sixteen small tasks cost milliseconds a block.
MAX_OPEN_TASKS = 16
# A task keeps a vote of its model's size per block of its round, in the state
# and in every block's undo record, and anyone with a bounty may deploy one:
# these bound what a deployed task makes every node hold, with MAX_DEPLOYED_ROUND_FLOATS
# below on their product (1 MiB of votes at most per task; without it 64 x 64 Ki float32
# made 16 MiB of votes per task, written with every block's undo record). The genesis task is the chain
# creator's choice and only bound by the caps above.
MAX_DEPLOYED_PARAMS = 65_536
MAX_DEPLOYED_ROUND_BLOCKS = 64
MIN_BOUNTY = 1_000_000  # a deploy locks at least this: it pays the task's miners and contributors
# A deploy's fee burns DEPLOY_BURN doubled for each task already training past the genesis
# task (consensus.contracts.deploy_burn): the bounty comes back to the deployer, the burn
# never does, so holding task slots costs coins for good. Filling all 15 deployable slots
# burns (2**15 - 1) * DEPLOY_BURN, about 32.8 G: 655 digits block rewards (was: 15 M locked,
# returned after MAX_IDLE_BLOCKS). The first deploy on a chain burns 1 M.
DEPLOY_BURN = 1_000_000
# A deployed task keeps one vote of its model's size per block of its round, in the state
# and in each block's undo record: their product is capped (1 MiB of float32 votes).
MAX_DEPLOYED_ROUND_FLOATS = 1 << 18
# A deployed task's identities cost at least this much: every block copies, hashes and
# writes every stake of every task, so a free bond (a zero fee from a key with no coins)
# would let anyone slow every node (100 000 stakes: ~1.8 s a block). docs/tasks.md's
# default bond is this.
MIN_DEPLOYED_BOND = 1_000_000
# A deployed task with a target checks it on its evaluation rows at each round's end whose
# step was applied, on every node (a fixed-order float64 loop, about 3 ns a multiply-add):
# rows x parameters is capped, ~12 ms a check. Without it 3 600 rows x 64 Ki parameters
# took 0.64 s, every round of four blocks, for a 1 M burn.
MAX_DEPLOYED_EVAL_WORK = 1 << 22
# A deployed task whose model has not moved for this many blocks (nobody trains it,
# or every round was refused) closes and returns its bounty: its slot frees itself.
MAX_IDLE_BLOCKS = 2016
# -- canonical msgpack (consensus/encoding.py) ------------------------------------------------
MAX_STR_BYTES = 64 * KIB  # a text field: a task's rule and names, an update's kind
MAX_ARRAY_LEN = 1_000_000  # an array's items before the field checks run
MAX_MAP_LEN = 1024  # a map's keys: the task (25) and an update's wire form (6) need far fewer

# -- the largest encodings, for the checks above and the task's fit -------------------------------
_HEADER_BYTES = 80
_HASH_BYTES = 32
_ADDRESS_BYTES = 21
_PUBLIC_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
_U64_BYTES = 9  # msgpack uint64: marker and 8 bytes, the widest integer
_U32_BYTES = 5
_SMALL_INT_BYTES = 1  # positive fixint: a transaction kind, a zero chunk
_UPDATE_WIRE_KEYS = ("chunk", "data", "indices", "kind", "scales", "size")
_F32_KIND = "f32"


def bin_size(length: int) -> int:
    """Bytes of a msgpack bin of ``length`` bytes: its header and the bytes."""
    if length < 2**8:
        return 2 + length
    if length < 2**16:
        return 3 + length
    return 5 + length


def uint_size(value: int) -> int:
    """Bytes of the shortest msgpack encoding of the unsigned ``value`` (canonical form)."""
    return 1 if value < 2**7 else 2 if value < 2**8 else 3 if value < 2**16 else 5 if value < 2**32 else 9


def array_header_size(count: int) -> int:
    """Bytes of a msgpack array header for ``count`` items."""
    return 1 if count < 16 else 3 if count < 2**16 else 5


def block_size(tx_sizes: list[int]) -> int:
    """The exact encoded size of a block whose transactions encode to ``tx_sizes`` bytes.

    ``[header, state_root, [tx, ...]]``: the same bytes as ``len(block.encode())``
    without building them (``tests/unit/test_caps.py`` checks that).
    """
    return (
        array_header_size(3)
        + bin_size(_HEADER_BYTES)
        + bin_size(_HASH_BYTES)
        + array_header_size(len(tx_sizes))
        + sum(bin_size(size) for size in tx_sizes)
    )


def max_update_tx_size(param_count: int) -> int:
    """An upper bound on the encoded size of a gradient update of ``param_count`` values in f32.

    f32 is the dense form an honest trainer sends: the task id (a txid), the
    round at its widest encoding, the data ``4 * param_count`` bytes.
    """
    keys = sum(1 + len(key) for key in _UPDATE_WIRE_KEYS)  # fixstr keys
    wire = (
        1  # fixmap of 6
        + keys
        + 1 + len(_F32_KIND)  # kind
        + uint_size(param_count)  # size
        + _SMALL_INT_BYTES  # chunk 0
        + bin_size(4 * param_count)  # data
        + bin_size(0) * 2  # scales, indices
    )
    return (
        array_header_size(6)
        + _SMALL_INT_BYTES  # kind
        + bin_size(_PUBLIC_KEY_BYTES)  # sender
        + bin_size(_HASH_BYTES)  # task id
        + _U32_BYTES  # round
        + wire
        + bin_size(_SIGNATURE_BYTES)
    )


def max_coinbase_size(payouts: int) -> int:
    """An upper bound on the encoded size of a coinbase with ``payouts`` payouts and the longest extra."""
    payout = array_header_size(2) + bin_size(_ADDRESS_BYTES) + _U64_BYTES
    return (
        array_header_size(4)
        + _SMALL_INT_BYTES
        + _U32_BYTES
        + array_header_size(payouts)
        + payouts * payout
        + bin_size(MAX_COINBASE_EXTRA)
    )


def max_full_block_size(task: TaskSpec) -> int:
    """An upper bound on a round's last block of ``task``'s most updates, each a full f32 update,
    paying every update of the round."""
    n = task.max_updates_per_block
    paid = task.round_blocks * n
    return block_size([max_coinbase_size(paid + 1), *[max_update_tx_size(task.param_count)] * n])


def check_task_fits(task: TaskSpec) -> None:
    """Refuse a task whose full blocks the caps would refuse: its model could never train at full speed.

    A task is checked when a chain is created on it (:func:`consensus.genesis.make_genesis`).

    Raises
    ------
    ValueError
        Naming the cap and the task field that break it.
    """
    if task.param_count > MAX_UPDATE_PARAMS:
        raise ValueError(
            f"task {task.name!r}: {task.param_count} parameters, an update carries at most {MAX_UPDATE_PARAMS}"
        )
    update = max_update_tx_size(task.param_count)
    if update > MAX_TX_BYTES:
        raise ValueError(
            f"task {task.name!r}: an f32 update of {task.param_count} parameters takes {update} bytes, "
            f"a transaction at most {MAX_TX_BYTES}"
        )
    full = max_full_block_size(task)
    if full > MAX_BLOCK_BYTES:
        raise ValueError(
            f"task {task.name!r}: {task.max_updates_per_block} full f32 updates make a {full}-byte block, "
            f"a block holds at most {MAX_BLOCK_BYTES}; lower max_updates_per_block or the model size"
        )
