"""Separate hosts: three nodes in their own Linux network namespaces, joined by a switch.

::

    host h0 (198.18.0.1) ─┐
    host h1 (198.18.0.2) ─┼─ switch (a bridge in its own namespace) ─ this test (198.18.0.254)
    host h2 (198.18.0.3) ─┘

Each host runs the README's command (``gradchain node run --mine --train
--peer http://198.18.0.1:PORT``) through ``ip netns exec``; nothing is
shared but the wire. They sync, mine and converge on one tip and state root;
then h2's link goes down (h2 mines alone, the others mine on), comes up
again, and all three converge once more. The addresses are in 198.18.0.0/24,
the range set aside for network tests (RFC 2544), and exist only inside the
namespaces the test creates and deletes. Needs root and iproute2 (``make
test`` installs it); skipped with the reason where the kernel forbids
namespaces.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from node.keystore_file import write_keystore
from tests.conftest import wait_until
from tests.reliability import sized
from wallet import keypair_from_seed

HOSTS = 3
PORT = 18900
SUBNET = "198.18.0"
TEST_ADDRESS = f"{SUBNET}.254"
PREFIX = f"gc{os.getpid() % 100000}"  # namespace and link names: ours alone, and short (15-char limit)
CONVERGE_S = sized(120, 300)
DOWN_BLOCKS = sized(3, 10)  # blocks the connected pair mines past the cut-off host
PASSWORD = "netns-test-password"


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


def ns(i: int | str) -> str:
    return f"{PREFIX}{i}"


def address(i: int) -> str:
    return f"{SUBNET}.{i + 1}"


def namespaces_or_skip() -> None:
    if sys.platform != "linux":
        pytest.skip("network namespaces are Linux-only")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is missing: `apt-get install iproute2` (make test installs it as root)")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    probe = subprocess.run(["ip", "netns", "add", ns("probe")], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the kernel refuses network namespaces here: {probe.stderr.strip()}")
    run("ip", "netns", "del", ns("probe"))


@pytest.fixture()
def network() -> Iterator[None]:
    """A switch namespace with a bridge; a veth from it to each host namespace and to this one."""
    namespaces_or_skip()
    switch = ns("sw")
    try:
        run("ip", "netns", "add", switch)
        run("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", switch, "link", "set", "br0", "up")
        for i in range(HOSTS):
            run("ip", "netns", "add", ns(i))
            run("ip", "-n", ns(i), "link", "set", "lo", "up")
            run("ip", "link", "add", f"{PREFIX}h{i}", "netns", ns(i), "type", "veth", "peer", "name", f"{PREFIX}s{i}",
                "netns", switch)
            run("ip", "-n", ns(i), "addr", "add", f"{address(i)}/24", "dev", f"{PREFIX}h{i}")
            run("ip", "-n", ns(i), "link", "set", f"{PREFIX}h{i}", "up")
            run("ip", "-n", switch, "link", "set", f"{PREFIX}s{i}", "master", "br0", "up")
        run("ip", "link", "add", f"{PREFIX}t", "type", "veth", "peer", "name", f"{PREFIX}st", "netns", switch)
        run("ip", "addr", "add", f"{TEST_ADDRESS}/24", "dev", f"{PREFIX}t")
        run("ip", "link", "set", f"{PREFIX}t", "up")
        run("ip", "-n", switch, "link", "set", f"{PREFIX}st", "master", "br0", "up")
        wire_or_skip()
        yield
    finally:
        for name in [ns(i) for i in range(HOSTS)] + [switch]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{PREFIX}t"], capture_output=True)


# Straight to the namespaces: an http_proxy in the environment (CI machines may set one)
# must not carry the test's requests off to a proxy that cannot see them.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wire_or_skip() -> None:
    """A plain HTTP server in h0, fetched from here: the namespaces pass traffic at all.

    Some sandboxes create namespaces, veths and bridges but forward nothing
    between them. That is the machine, not the node: skip with the reason, so
    a failure below always means the nodes themselves misbehaved.
    """
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns(0), sys.executable, "-m", "http.server", "--bind", address(0), str(PORT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with DIRECT.open(f"http://{address(0)}:{PORT}/", timeout=2):
                    return
            except (urllib.error.URLError, OSError) as exc:
                if time.monotonic() > deadline:
                    pytest.skip(f"the namespaces here pass no traffic (a plain HTTP server in {ns(0)} "
                                f"was unreachable from the test for 20 s: {exc})")
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=10)


def status(i: int) -> dict[str, Any] | None:
    try:
        with DIRECT.open(f"http://{address(i)}:{PORT}/api/status", timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except (urllib.error.URLError, OSError, ValueError):
        return None


def converged() -> bool:
    seen = [status(i) for i in range(HOSTS)]
    return all(s is not None and s["height"] > 0 for s in seen) and len(
        {(s["tip"], s["state_root"]) for s in seen if s is not None}) == 1


def start_host(i: int, base: pathlib.Path) -> subprocess.Popen[bytes]:
    datadir = base / f"h{i}"
    datadir.mkdir()
    keystore, password_file = datadir / "wallet.json", base / "password"
    write_keystore(keystore, keypair_from_seed(bytes([i + 1]) * 32), PASSWORD)
    argv = ["ip", "netns", "exec", ns(i), sys.executable, "-m", "node.cli", "node", "run",
            "--datadir", str(datadir), "--network", "regtest", "--f", "0",
            "--listen", f"{address(i)}:{PORT}", "--mine", "--train", "--shard", f"{i}/{HOSTS}",
            "--keystore", str(keystore), "--password-file", str(password_file), "--block-interval", "1.0"]
    if i > 0:
        argv += ["--peer", f"http://{address(0)}:{PORT}"]
    env = {k: v for k, v in os.environ.items() if k != "GRADCHAIN_PASSWORD"}
    log = open(datadir / "node.log", "wb")  # noqa: SIM115 - the child's output, for a post-mortem
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def log_tail(base: pathlib.Path, i: int, lines: int = 25) -> str:
    path = base / f"h{i}" / "node.log"
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return f"--- h{i}'s log, last {lines} lines ---\n" + "\n".join(text.splitlines()[-lines:])


def wait_for_hosts(procs: list[subprocess.Popen[bytes]], base: pathlib.Path, timeout: float = 120) -> None:
    """Every host answers /api/status; a host that exits or stays silent fails the test with its log."""
    deadline = time.monotonic() + timeout
    while not all(status(i) is not None for i in range(HOSTS)):
        exited = [i for i, proc in enumerate(procs) if proc.poll() is not None]
        if exited:
            pytest.fail(f"host h{exited[0]} exited with code {procs[exited[0]].returncode}\n"
                        + log_tail(base, exited[0]))
        if time.monotonic() > deadline:
            silent = [i for i in range(HOSTS) if status(i) is None]
            pytest.fail(f"hosts {silent} did not answer /api/status within {timeout:.0f} s\n"
                        + "\n".join(log_tail(base, i) for i in silent))
        time.sleep(0.5)


def test_three_hosts_sync_mine_converge_and_heal_a_link(network: None, tmp_path: pathlib.Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    procs = [start_host(i, tmp_path) for i in range(HOSTS)]
    try:
        wait_for_hosts(procs, tmp_path)
        # h1 and h2 dial h0; they need not dial each other (one outbound link per network group).
        wait_until(lambda: int((status(0) or {}).get("peers", 0)) >= HOSTS - 1, 60, 0.5,
                   "h0 to peer with the other hosts")
        wait_until(converged, CONVERGE_S, 0.5, "one tip and state root on the three hosts")
        before = [status(i) for i in range(HOSTS)]

        run("ip", "-n", ns(HOSTS - 1), "link", "set", f"{PREFIX}h{HOSTS - 1}", "down")
        cut_height = int(before[0]["height"])  # type: ignore[index]
        wait_until(lambda: int((status(0) or {"height": 0})["height"]) >= cut_height + DOWN_BLOCKS, CONVERGE_S, 0.5,
                   f"h0 and h1 to mine {DOWN_BLOCKS} blocks while h2 is cut off")
        assert status(HOSTS - 1) is None, "h2 is unreachable while its link is down"
        run("ip", "-n", ns(HOSTS - 1), "link", "set", f"{PREFIX}h{HOSTS - 1}", "up")
        wait_until(converged, CONVERGE_S, 0.5, "the three hosts to converge again after the link came back")
        after = [status(i) for i in range(HOSTS)]
        print(f"{HOSTS} hosts in network namespaces: converged at height {before[0]['height']}, "  # type: ignore[index]
              f"link down for {DOWN_BLOCKS}+ blocks, converged again at height {after[0]['height']}")  # type: ignore[index]
        assert all(int(s["height"]) >= cut_height + DOWN_BLOCKS for s in after if s is not None)
    finally:
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + 30
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
