"""``free_port``: a listening port for a child process, never one an outgoing connection can take."""

from __future__ import annotations

import socket
import subprocess
import sys

from tapeflow.stack.process import _reserve, free_port


def ephemeral_range() -> tuple[int, int]:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(v) for v in f.read().split())
    return low, high


def test_ports_come_from_below_the_ephemeral_range_and_can_be_listened_on():
    low, _ = ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert all(1_024 <= p < low for p in ports), ports
    assert len(set(ports)) > 40  # drawn at random, not one port handed out again and again
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))
        s.listen()


def test_a_port_someone_listens_on_is_never_handed_out():
    low, _ = ephemeral_range()
    held = []
    try:
        for port in range(low - 200, low):  # fill a slice of the range with listeners
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            s.listen()
            held.append(s)
        taken = {s.getsockname()[1] for s in held}
        assert not taken & {free_port() for _ in range(300)}
    finally:
        for s in held:
            s.close()


def test_a_port_handed_out_is_not_handed_out_again_to_this_or_another_process_until_its_holder_exits():
    """Two callers whose children have not bound yet must not get one port (a sink starting under load
    lost its port this way): the claim is shared across processes and ends with its holder."""
    ours = [free_port() for _ in range(200)]
    assert len(set(ours)) == len(ours)  # this process never gets a port twice
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from tapeflow.stack.process import free_port; "
            "print(free_port(), flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        theirs = int(holder.stdout.readline())
        assert theirs not in ours
        assert not _reserve(theirs), "another process's port was claimable"
        assert not _reserve(ours[0])
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert _reserve(theirs), "the claim outlived the process that held it"
