"""A small typed client for a node's /api/ (standard library only, synchronous).

Used by the CLI commands and the tests, and meant for participants who train
elsewhere (a bonded key; docs/DESIGN-NOTES.md, "Rounds, bonds and commit-reveal")::

    from node.client import NodeClient
    client = NodeClient("http://127.0.0.1:8733")
    client.bond(keypair)                           # once: locks the task's bond
    params, height = client.model_params()         # the round's model
    deltas = [params - my_training_loop(params) for _ in range(4)]  # float32, the task's shape
    client.contribute(keypair, deltas)             # commit now, reveal one per block next round
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from consensus.contracts import deploy_burn
from consensus.header import hex_to_hash
from consensus.state import TRAINING
from consensus.tx import Bond, Deploy, Transfer, chain_tag, encode_tx, sign_tx
from ml.checks import UpdateCheckError, UpdateProblem, check_finite, check_norm, check_shape
from ml.codec import decode_update, encode_update
from ml.tasks import TaskSpec
from node.contributor import Contributor, KeyStatus
from wallet import KeyPair, address_of

DEFAULT_TIMEOUT_S = 30.0


def _tag_of(status: dict[str, Any]) -> bytes:
    """What a signature on the chain ``status`` describes binds (chain id and genesis hash)."""
    return chain_tag(int(status["chain_id"]), hex_to_hash(str(status["genesis"])))


T = TypeVar("T")


class ApiError(Exception):
    """The node answered with an error (``status``) or could not be reached (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


class UpdateRefused(ValueError):
    """An update failed the node's own checks here, before anything was sent; the message says why."""


def check_update_locally(task: TaskSpec, delta: np.ndarray, encoding: str = "f32") -> np.ndarray:
    """The update as the node will see it (encoded, then decoded), after the node's checks.

    Runs the consensus checks of :mod:`ml.checks` that need no chain (shape,
    finite values, the task's norm bound) on exactly the vector the node will
    decode, so an update that passes here is not refused for them there.
    Raises :class:`UpdateRefused` with the reason and what to do.
    """
    values = np.asarray(delta)
    if values.ndim != 1 or values.size != task.param_count:
        raise UpdateRefused(f"the update has shape {list(values.shape)}; task {task.name} expects "
                            f"[{task.param_count}] (a flat float32 vector, params_base - params_trained)")
    try:
        check_finite(values.astype(np.float32))
        decoded = decode_update(encode_update(values.astype(np.float32), encoding), task.param_count)
        check_shape(decoded, task.param_count)
        check_finite(decoded)
        check_norm(decoded, task.norm_bound)
    except UpdateCheckError as exc:
        if exc.problem is UpdateProblem.NORM:
            raise UpdateRefused(f"the update's L2 norm exceeds the task's bound ({exc.detail}); "
                                "train less far (lower lr or fewer steps) or clip it") from None
        if exc.problem is UpdateProblem.NOT_FINITE:
            raise UpdateRefused(f"the update has NaN or infinite values ({exc.detail}); "
                                "check the training run for divergence") from None
        raise UpdateRefused(f"the update fails the node's {exc.problem.value} check: {exc.detail}") from None
    return decoded


def wait_for(what: str, ready: Callable[[], T | None], *, timeout_s: float = 900.0, poll_s: float = 1.0) -> T:
    """Call ``ready()`` every ``poll_s`` seconds until it returns something truthy, and return that.

    A node that does not answer yet (``ApiError``) counts as not ready, so a script can start
    polling while its node is still starting. Raises ``TimeoutError`` naming ``what`` after
    ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = ready()
        except ApiError:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


@dataclass
class NodeClient:
    url: str
    token: str | None = None  # DATADIR/.cookie, for control routes
    timeout: float = DEFAULT_TIMEOUT_S

    # -- plumbing ----------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None,
                 content_type: str = "application/json") -> tuple[bytes, dict[str, str]]:
        request = urllib.request.Request(self.url.rstrip("/") + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                text = json.loads(text).get("error", text)
            except (json.JSONDecodeError, AttributeError):
                pass
            raise ApiError(exc.code, text.strip()) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(0, f"cannot reach {self.url}: {exc}; is the node running?") from None

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        raw, _ = self._request(method, path, body)
        return json.loads(raw)

    # -- reads ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return dict(self._json("GET", "/api/status"))

    def block(self, ident: int | str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/blocks/{ident}"))

    def tx(self, tx_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/tx/{tx_id}"))

    def account(self, address: str, task_id: str | None = None) -> dict[str, Any]:
        """Balance and nonces, and the bond and commitments of task ``task_id`` (default: the chain's first)."""
        suffix = "" if task_id is None else f"?task={task_id}"
        return dict(self._json("GET", f"/api/accounts/{address}{suffix}"))

    def peers(self) -> dict[str, Any]:
        return dict(self._json("GET", "/api/peers"))

    def model(self, height: int | None = None) -> dict[str, Any]:
        suffix = "" if height is None else f"?height={height}"
        return dict(self._json("GET", f"/api/model{suffix}"))

    def task_spec(self, task_id: str | None = None) -> TaskSpec:
        """Task ``task_id``'s spec (model shape, local-training hints, norm bound); default: the chain's first."""
        if task_id is None:
            return TaskSpec.from_dict(self.model()["task"])
        return TaskSpec.from_dict(self.task(task_id)["spec"])

    def model_params(self, height: int | None = None, task_id: str | None = None) -> tuple[np.ndarray, int]:
        """Task ``task_id``'s flat float32 parameters (default: the chain's first task's) at ``height``
        (default: the tip) and that height."""
        suffix = "" if height is None else f"?height={height}"
        path = "/api/model/params" if task_id is None else f"/api/tasks/{task_id}/params"
        raw, headers = self._request("GET", f"{path}{suffix}")
        if len(raw) % 4:
            raise ApiError(0, "parameter bytes are not a whole number of float32 values")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32), int(headers["X-Gradchain-Height"])

    def predict(self, inputs: np.ndarray | list[list[float]], height: int | None = None) -> list[Any]:
        suffix = "" if height is None else f"?height={height}"
        rows = np.asarray(inputs, dtype=np.float64).tolist()
        return list(self._json("POST", f"/api/predict{suffix}", {"inputs": rows})["predictions"])

    # -- tasks (issue 19): every task of the chain by its id ------------------------------------
    def tasks(self, height: int | None = None) -> list[dict[str, Any]]:
        """Every task: id, name, status and the headline figures of its model."""
        suffix = "" if height is None else f"?height={height}"
        return list(self._json("GET", f"/api/tasks{suffix}")["tasks"])

    def task(self, task_id: str, height: int | None = None) -> dict[str, Any]:
        """One task: its spec, status, evaluation figures and their history."""
        suffix = "" if height is None else f"?height={height}"
        return dict(self._json("GET", f"/api/tasks/{task_id}{suffix}"))

    def task_predict(self, task_id: str, inputs: np.ndarray | list[list[float]],
                     height: int | None = None) -> tuple[list[Any], int]:
        """Predictions of task ``task_id``'s model at ``height`` (default: the tip), and that height."""
        suffix = "" if height is None else f"?height={height}"
        rows = np.asarray(inputs, dtype=np.float64).tolist()
        reply = self._json("POST", f"/api/tasks/{task_id}/predict{suffix}", {"inputs": rows})
        return list(reply["predictions"]), int(reply["height"])

    # -- writes --------------------------------------------------------------------------------
    def submit_raw_tx(self, raw: bytes) -> str:
        return str(self._json("POST", "/api/tx", {"tx": raw.hex()})["txid"])

    def key_status(self, keypair: KeyPair, task_id: str | None = None) -> tuple[KeyStatus, dict[str, Any]]:
        """The key in task ``task_id`` (default: the chain's first) as the node's tip sees it, for the
        next block, and the node's status."""
        status = self.status()
        account = self.account(address_of(keypair.public), task_id)
        height = int(account["height"]) + 1
        current = int(account["round"])
        bond = account["bond"]
        commitments = {int(c["round"]): c for c in account["commitments"]}
        last = commitments.get(current - 1)
        unrevealed = () if last is None else tuple(int(i) for i in last["unrevealed"])
        key = KeyStatus(
            height=height, round=current, balance=int(account["balance"]), next_nonce=int(account["next_nonce"]),
            bonded=bond is not None, mature=bond is not None and height >= int(bond["mature_at"]),
            bond_pending=False, committed=current in commitments, unrevealed=unrevealed, reveal_pending=False,
        )
        return key, status

    def contributor(self, keypair: KeyPair, status: dict[str, Any] | None = None, task_id: str | None = None,
                    task: TaskSpec | None = None) -> Contributor:
        """A :class:`Contributor` for ``keypair`` on the node's chain and task ``task_id`` (default: the
        first; ``status``: the node's, ``task``: that task's spec, when the caller has them)."""
        status = self.status() if status is None else status
        task = self.task_spec(task_id) if task is None else task
        return Contributor(keypair, task, _tag_of(status), hex_to_hash(task_id or str(status["task_id"])))

    def bond(self, keypair: KeyPair, fee: int = 0, task_id: str | None = None) -> str | None:
        """Lock task ``task_id``'s bond (default: the chain's first task's) for ``keypair``, its identity
        as a contributor to that task; None if already bonded.

        Raises ``ApiError`` when the node refuses it (e.g. insufficient funds).
        """
        key, status = self.key_status(keypair, task_id)
        if key.bonded:
            return None
        tx = Bond(keypair.public, key.next_nonce, fee, hex_to_hash(task_id or str(status["task_id"])))
        return self.submit_raw_tx(encode_tx(sign_tx(tx, keypair, _tag_of(status))))

    def contribute(
        self,
        keypair: KeyPair,
        deltas: list[np.ndarray],
        *,
        task_id: str | None = None,
        encoding: str = "f32",
        poll_s: float = 1.0,
        timeout_s: float = 600.0,
        progress: Any = None,
    ) -> list[str]:
        """Commit ``deltas`` (computed on the current round's model of task ``task_id``, default the
        chain's first) now, then reveal them during the next round; returns the reveals' txids.

        A block counts one update per sender, but the mempool holds a round's worth per sender, so
        every reveal is pooled at once when the next round starts (as the node's own trainer and the
        Flower bridge do): each miner then has one for every block, however fast blocks come. At
        each new block those the chain has not taken yet are sent again (the node answers a pooled
        one with its txid and changes nothing), so one a pool dropped is back for the next block.

        Blocks until every reveal is on chain or the reveal round is over (at most two rounds).
        ``progress(str)``, if given, hears each step. Raises ``ApiError`` if the node refuses the
        commitment, cannot be reached, or ``timeout_s`` passes.
        """
        say = progress or (lambda _text: None)
        key, status = self.key_status(keypair, task_id)
        if not key.mature:
            raise ApiError(0, "this key has no mature bond: run `gradchain update bond` (or client.bond) first")
        me = self.contributor(keypair, status, task_id)
        base_hash = hex_to_hash(self.block(key.round * me.task.round_blocks)["hash"])
        encoded = [encode_update(np.asarray(d, dtype=np.float32), encoding) for d in deltas]
        commit = me.commit(key, base_hash, encoded)
        self.submit_raw_tx(encode_tx(commit))
        count = len(commit.hashes)
        say(f"committed {count} update(s) in round {commit.round}; they reveal in round {commit.round + 1}")
        pooled: dict[int, str] = {}
        deadline = time.monotonic() + timeout_s
        last_height = -1
        while True:
            if time.monotonic() > deadline:
                raise ApiError(0, f"gave up after {timeout_s:.0f} s with {len(pooled)} of {count} reveal(s) "
                                  "pooled: is the network mining?")
            key, _ = self.key_status(keypair, task_id)
            if key.round > commit.round + 1:
                break  # the reveal round is over
            if key.round == commit.round + 1:
                if not key.unrevealed:
                    say(f"all {count} update(s) of round {commit.round} are on chain")
                    break
                if key.height != last_height:
                    sent, refused = self.pool_reveals(me, key, pooled)
                    for index, why in refused.items():
                        say(f"reveal {index + 1} not pooled yet ({why}); it goes again at the next block")
                    for index, txid in sent.items():
                        if index not in pooled:
                            pooled[index] = txid
                            say(f"pooled reveal {index + 1} of {count} at block {key.height}")
                    last_height = key.height
            time.sleep(poll_s)
        missing = count - len(pooled)
        if key.unrevealed:
            say(f"the reveal round ended with {len(key.unrevealed)} of {count} update(s) not on chain "
                f"({missing} never pooled): they do not count")
        return [pooled[index] for index in sorted(pooled)]

    def pool_reveals(self, me: Contributor, key: KeyStatus,
                     sent: Mapping[int, str] | None = None) -> tuple[dict[int, str], dict[int, str]]:
        """Send every reveal of ``me``'s last commitment the chain has not taken yet (``key``: the tip's
        view of the key). Returns the txid of each the node pooled and the reason for each it refused,
        by the update's index in the commitment; raises ``ApiError`` if the node cannot be reached.

        ``sent`` (index -> txid) names reveals sent before: one the node still holds is only looked
        up, not uploaded again (an update can be megabytes; a lookup is a few bytes).
        """
        pooled: dict[int, str] = {}
        refused: dict[int, str] = {}
        known = sent or {}
        # pending_reveals keeps key.unrevealed's (ascending) order, up to the plan's length
        for index, reveal in zip(key.unrevealed, me.pending_reveals(key), strict=False):
            if index in known and self._still_pooled(known[index]):
                pooled[index] = known[index]
                continue
            try:
                pooled[index] = self.submit_raw_tx(encode_tx(reveal))
            except ApiError as exc:
                if exc.status == 0:
                    raise
                refused[index] = exc.message
        return pooled, refused

    def _still_pooled(self, tx_id: str) -> bool:
        try:
            return str(self.tx(tx_id)["status"]) == "mempool"
        except ApiError as exc:
            if exc.status == 0:
                raise
            return False  # dropped (404): send it again

    def send(self, keypair: KeyPair, to: bytes, amount: int, fee: int = 0) -> str:
        """Sign and submit a transfer of ``amount`` base units to the raw address ``to``."""
        status = self.status()
        nonce = self.account(address_of(keypair.public))["next_nonce"]
        tx = Transfer(keypair.public, nonce, to, amount, fee)
        return self.submit_raw_tx(encode_tx(sign_tx(tx, keypair, _tag_of(status))))

    def deploy_fee(self) -> int:
        """The fee a deploy needs on the node's tip: the burn for the tasks training now
        (:func:`consensus.contracts.deploy_burn`; a deploy pooled meanwhile doubles it)."""
        return deploy_burn(sum(t["status"] == TRAINING for t in self.tasks()))

    def deploy(self, keypair: KeyPair, spec: TaskSpec, evalset: bytes, bounty: int, fee: int | None = None) -> str:
        """Sign and submit a deploy of ``spec`` with ``evalset`` (:func:`ml.evalset.encode_evalset`'s
        bytes) and ``bounty``, with ``fee`` (default :meth:`deploy_fee`); returns the new task's id
        (the deploy's txid)."""
        if fee is None:
            fee = self.deploy_fee()
        status = self.status()
        nonce = self.account(address_of(keypair.public))["next_nonce"]
        tx = Deploy(keypair.public, nonce, fee, bounty, spec.to_dict(), evalset)
        return self.submit_raw_tx(encode_tx(sign_tx(tx, keypair, _tag_of(status))))

    def mine(self, blocks: int = 1) -> dict[str, Any]:
        """Mine blocks now (regtest; needs the node's cookie token)."""
        return dict(self._json("POST", "/api/mine", {"blocks": blocks}))

    def add_peer(self, url: str) -> dict[str, Any]:
        return dict(self._json("POST", "/api/peers", {"url": url}))

