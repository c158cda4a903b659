"""Start and stop the nodes of a local testnet; DIR/testnet.json says what runs.

Each node is a real ``gradchain node run`` process with its own datadir,
wallet, encrypted shard and port; node0 is the seed the others are given
with ``--peer``, and address exchange does the rest. The manifest records
the exact argv of each node so a user (or a script) can stop and restart one
by hand.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from node.keystore_file import read_password_file, write_keystore
from node.testnet.deploy import GENESIS_TASK
from node.testnet.owndata import EVAL_FILE, node_file
from wallet import keypair_from_seed

MANIFEST = "testnet.json"
PASSWORD_FILE = ".password"
BASE_PORT = 18740  # first port tried; the next free one is used if taken
STOP_TIMEOUT_S = 20.0  # a node flushes and exits well within this after SIGTERM


@dataclass
class NodeEntry:
    name: str
    api: str
    pid: int
    datadir: str
    attacker: bool
    argv: list[str]


@dataclass
class TestnetPlan:
    nodes: int = 3
    attackers: int = 0
    attack: str = "sign-flip"
    task: str = "digits"
    rule: str | None = None
    network: str = "testnet"
    alpha: float = 1.0  # Dirichlet label skew of the shards (non-IID)
    threads: int = 1
    data: str | None = None  # a directory of the participants' own files (node/testnet/owndata.py)


def free_port(start: int) -> int:
    for port in range(start, start + 1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}..{start + 999}")


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours has exited
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return True


def load_manifest(directory: pathlib.Path) -> list[NodeEntry]:
    path = directory / MANIFEST
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return [NodeEntry(**n) for n in data["nodes"]]


def load_plan(directory: pathlib.Path) -> TestnetPlan | None:
    path = directory / MANIFEST
    if not path.exists():
        return None
    plan = json.loads(path.read_text()).get("plan")
    return None if plan is None else TestnetPlan(**plan)


def write_manifest(directory: pathlib.Path, entries: list[NodeEntry], plan: TestnetPlan) -> None:
    tmp = directory / (MANIFEST + ".tmp")
    body = {"nodes": [asdict(e) for e in entries], "plan": asdict(plan)}
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(directory / MANIFEST)


def testnet_password(directory: pathlib.Path) -> str:
    """The testnet's wallet password, kept in DIR/.password (mode 0600).

    Written once, when the testnet is new: $GRADCHAIN_PASSWORD if set, else a
    generated one. Every node's recorded command reads it with
    ``--password-file``, so a user can restart a node by hand as written.
    """
    path = directory / PASSWORD_FILE
    if not path.exists():
        password = os.environ.get("GRADCHAIN_PASSWORD") or secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
    return read_password_file(path)


def deploys(plan: TestnetPlan) -> bool:
    """True when the plan's task is deployed by a transaction (a spec file with --data DIR)."""
    from node.taskfile import is_spec_path

    return plan.data is not None and is_spec_path(plan.task)


def node_argv(plan: TestnetPlan, index: int, datadir: pathlib.Path, port: int, seed_url: str | None,
              attacker: bool, task_id: str | None = None, *, train: bool = True) -> list[str]:
    """One node's command line; ``task_id`` is the deployed task's (node/testnet/deploy.py), if any.
    ``train=False``: a miner alone (node0 before it deploys)."""
    genesis = GENESIS_TASK if deploys(plan) else plan.task
    argv = [
        sys.executable, "-m", "node.cli", "node", "run",
        "--datadir", str(datadir), "--network", plan.network, "--task", genesis,
        "--listen", f"127.0.0.1:{port}", *(["--train"] if train else []),
        "--shard", f"{index}/{plan.nodes}", "--shard-scheme", "dirichlet", "--alpha", str(plan.alpha),
        "--keystore", str(datadir / "wallet.json"), "--password-file", str(datadir.parent / PASSWORD_FILE),
        "--threads", str(plan.threads), "--mine",  # a sybil-flood attacker mines only until its keys are bonded
    ]
    if deploys(plan):  # both tasks: digits on the shard, the deployed one on the node's file
        if train and task_id is not None:
            argv += ["--train", task_id, "--data", str(node_file(pathlib.Path(plan.data or "."), index))]
    elif plan.data:
        argv += ["--data", str(node_file(pathlib.Path(plan.data), index)),
                 "--eval", str(pathlib.Path(plan.data) / EVAL_FILE)]
    if plan.rule:
        argv += ["--rule", plan.rule]
    if seed_url:
        argv += ["--peer", seed_url]
    if attacker:
        argv += ["--attack", plan.attack]
    return argv


def spawn(argv: list[str], datadir: pathlib.Path, password: str) -> subprocess.Popen[bytes]:
    """Start one node; the password also goes in the environment for manifests written
    before ``--password-file`` (their recorded argv lacks it)."""
    log = open(datadir / "node.log", "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, "GRADCHAIN_PASSWORD": password, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)


def up(directory: pathlib.Path, plan: TestnetPlan, *, fresh: bool = False, base_port: int = BASE_PORT) -> list[NodeEntry]:
    """Start (or resume) the testnet in ``directory``; returns the manifest entries.

    An existing testnet of the same plan resumes where it stopped; ``fresh``
    deletes it first.
    """
    directory = directory.resolve()  # recorded commands must work from any working directory
    running = [e for e in load_manifest(directory) if is_alive(e.pid)]
    if running:
        raise RuntimeError(f"a testnet is already running in {directory} ({len(running)} nodes); "
                           f"run `gradchain testnet down --dir {directory}` first")
    if fresh and directory.exists():
        shutil.rmtree(directory)
    previous_plan = load_plan(directory)
    if previous_plan is not None and previous_plan != plan:
        raise RuntimeError(f"{directory} holds a testnet started with other settings ({previous_plan}); "
                           "add --fresh (make testnet FRESH=1) to start over, or use another --dir")
    directory.mkdir(parents=True, exist_ok=True)
    password = testnet_password(directory)
    previous = {e.name: e for e in load_manifest(directory)}
    entries: list[NodeEntry] = []
    seed_url: str | None = None
    port = base_port
    task_id = None
    if deploys(plan) and "node0" not in previous:
        task_id = _deploy(directory, plan, password, free_port(port))
    for index in range(plan.nodes):
        name = f"node{index}"
        datadir = directory / name
        datadir.mkdir(parents=True, exist_ok=True)
        keystore = datadir / "wallet.json"
        if not keystore.exists():
            write_keystore(keystore, keypair_from_seed(secrets.token_bytes(32)), password)
        attacker = index >= plan.nodes - plan.attackers
        if name in previous:  # restart exactly as before
            argv = previous[name].argv
            port = int(previous[name].api.rsplit(":", 1)[1])
        else:
            port = free_port(port)
            argv = node_argv(plan, index, datadir, port, seed_url, attacker, task_id)
        process = spawn(argv, datadir, password)
        api = f"http://127.0.0.1:{port}"
        entries.append(NodeEntry(name, api, process.pid, str(datadir), attacker, argv))
        seed_url = seed_url or api
        port += 1
    write_manifest(directory, entries, plan)
    return entries


def _deploy(directory: pathlib.Path, plan: TestnetPlan, password: str, port: int) -> str:
    """node0 mines alone, deploys the plan's task and stops (node/testnet/deploy.py); the task's id."""
    from node.taskfile import load_task
    from node.testnet.deploy import deploy_from_node0, stop

    datadir = directory / "node0"
    datadir.mkdir(parents=True, exist_ok=True)
    keystore = datadir / "wallet.json"
    if not keystore.exists():
        write_keystore(keystore, keypair_from_seed(secrets.token_bytes(32)), password)
    process = spawn(node_argv(plan, 0, datadir, port, None, False, train=False), datadir, password)
    try:
        return deploy_from_node0(
            f"http://127.0.0.1:{port}", keystore, password, load_task(plan.task),
            pathlib.Path(plan.data or ".") / EVAL_FILE, alive=lambda: process.poll() is None,
        )
    finally:
        stop(process, STOP_TIMEOUT_S)


def down(directory: pathlib.Path) -> int:
    """SIGTERM every node of the manifest, SIGKILL what is left after a grace period."""
    entries = [e for e in load_manifest(directory) if is_alive(e.pid)]
    for entry in entries:
        try:
            os.kill(entry.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and any(is_alive(e.pid) for e in entries):
        time.sleep(0.1)
    for entry in entries:
        if is_alive(entry.pid):
            os.kill(entry.pid, signal.SIGKILL)
    return len(entries)
