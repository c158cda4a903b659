"""A task named on the command line: a built-in name (digits, stock), a spec file, or an id.

``gradchain task init`` writes spec files; ``--task SPEC.json`` on ``chain
init``, ``node run`` and ``testnet up`` reads one back. Reading is strict
(``TaskSpec.from_dict``): an unknown or missing field, a wrong type or an
invalid value is an error that names the file and the field.

On a running chain a task is named by its id: the txid of the transaction
that created it (:func:`genesis_task_id` for the task the genesis carries),
given whole or as a unique prefix (:func:`match_task_id`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from consensus.header import hash_hex
from consensus.tx import txid
from ml.tasks import BUILTIN_TASKS, TaskSpec, builtin_task

MAX_SPEC_FILE_BYTES = 8 * 1024 * 1024  # 65 536 column names of 64 characters and their statistics fit


class TaskFileError(ValueError):
    """A ``--task`` value that is neither a built-in task nor a readable, valid spec file."""


def is_spec_path(value: str) -> bool:
    """True when ``value`` names a file rather than a built-in task."""
    return value not in BUILTIN_TASKS and (value.endswith(".json") or "/" in value)


def read_spec(path: pathlib.Path) -> TaskSpec:
    """The task in a JSON spec file, checked field by field."""
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_FILE_BYTES:
            raise TaskFileError(f"{path} is {size} bytes; a task spec is at most {MAX_SPEC_FILE_BYTES}")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaskFileError(f"cannot read task spec {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaskFileError(f"{path} is not a JSON task spec: {exc}") from None
    try:
        return TaskSpec.from_dict(data)
    except ValueError as exc:
        raise TaskFileError(f"{path}: {exc}") from None


def load_task(value: str) -> TaskSpec:
    """A built-in task by name, or the spec in the file ``value``."""
    if is_spec_path(value) or pathlib.Path(value).is_file():
        return read_spec(pathlib.Path(value))
    try:
        return builtin_task(value)
    except ValueError as exc:
        raise TaskFileError(f"{exc}, or a task spec file (gradchain task init writes one)") from None


MIN_ID_PREFIX = 4  # hex digits a prefix of a task id needs to name it


def genesis_task_id(chain: Any) -> str:
    """On the chain thread: the id of the task the genesis block carries (its TaskTx's txid, hex)."""
    return hash_hex(txid(chain.genesis.tx_bytes[0]))


def match_task_id(given: str, ids: list[str]) -> str:
    """The one id of ``ids`` that ``given`` is, or starts (at least MIN_ID_PREFIX hex digits).

    Raises
    ------
    TaskFileError
        If no id or several match; the message lists the ids.
    """
    wanted = given.lower()
    matches = [i for i in ids if i == wanted or (len(wanted) >= MIN_ID_PREFIX and i.startswith(wanted))]
    if len(matches) == 1:
        return matches[0]
    what = "matches several tasks" if matches else "is not a task of this chain"
    raise TaskFileError(f"task {given} {what}; its tasks: {', '.join(ids)}")


DEFAULT_BOUNTY_ROUNDS = 20  # what `task deploy` locks without --bounty: this many full rounds' payouts


def round_cost(spec: TaskSpec) -> int:
    """The most one round of a deployed task pays from its bounty: the miner, and every update slot."""
    return spec.block_reward + spec.round_blocks * spec.max_updates_per_block * spec.contributor_reward


def default_bounty(spec: TaskSpec) -> int:
    return DEFAULT_BOUNTY_ROUNDS * round_cost(spec)


def read_evalset(spec: TaskSpec, path: pathlib.Path) -> bytes:
    """The evaluation rows of ``path`` (CSV or .npz, checked against ``spec``) in a deploy's byte form.

    Raises
    ------
    TaskFileError
        Naming the file and the line and column of a bad cell, a width that
        is not the task's, or a set over the deploy's caps.
    """
    from consensus.caps import MIN_BOUNTY
    from consensus.contracts import check_deploy, deploy_burn
    from consensus.errors import BlockRejected
    from consensus.tx import Deploy
    from ml.datafile import DataFileError, parse_data
    from ml.evalset import MAX_EVAL_ROWS, encode_evalset

    try:
        table = parse_data(path.read_bytes(), spec, npz=path.suffix.lower() == ".npz")
    except OSError as exc:
        raise TaskFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except DataFileError as exc:
        raise TaskFileError(f"{path}: {exc}") from None
    if table.rows > MAX_EVAL_ROWS:
        raise TaskFileError(f"{path} has {table.rows} rows; a deployed evaluation set holds at most {MAX_EVAL_ROWS}")
    raw = encode_evalset(table.X, table.y)
    try:  # the chain's own checks (caps, width, classes), with a placeholder sender, bounty and fee
        check_deploy(Deploy(bytes(32), 0, deploy_burn(1), MIN_BOUNTY, spec.to_dict(), raw), open_tasks=1)
    except BlockRejected as exc:
        raise TaskFileError(f"{path}: {exc.detail}") from None
    return raw
