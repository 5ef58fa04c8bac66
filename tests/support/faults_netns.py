"""A network partition the test can cut and mend: a network namespace joined to this one by a veth
pair (the fault plan's "the database unreachable for 120 s, a network namespace link down, not a stopped
server").

`NetnsLink` creates the namespace ``tfp<hex>`` and a veth pair with a /30 of 10.213.0.0/16 (host end
``.1``, namespace end ``.2``); `down()` sets the namespace's end down: the host end loses its carrier
but keeps its address and route, so every packet to the namespace is still sent that way and dropped,
and no reset comes back (a cable pulled at the far end; setting the host end down instead removes
the route, and a connection attempt then leaves by the default route and meets whatever answers
there: on this machine's VM network, a proxy that accepts and closes). `up()` mends it. A socket opened by a thread that has joined the namespace
(`enter_netns`, the ``setns(2)`` call: per thread for network namespaces, so the test process's other
threads stay where they are) lives there, so `tests.support.faults_links.LinkProxy` can listen inside
it. The namespace is deleted on exit, which deletes the veth pair with it; names and subnets are
random, so parallel tests (xdist workers) do not meet.

Hand-rolled (about forty lines over ``ip``), because pyroute2 is not a dependency and the test needs
only these five commands; ``setns`` goes through ctypes because ``os.setns`` is Python 3.12+.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import subprocess
import uuid
from pathlib import Path

CLONE_NEWNET = 0x40000000  # <sched.h>


def netns_usable() -> str | None:
    """Why a namespace partition cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "not root (ip netns needs CAP_SYS_ADMIN)"
    if shutil.which("ip") is None:
        return "no ip binary (Debian package iproute2)"
    if not Path("/proc/self/ns/net").exists():
        return "the kernel has no network namespaces"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def enter_netns(name: str) -> None:
    """Move the calling thread into the named network namespace (``/run/netns/<name>``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsLink:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.name, self.host_if, self.ns_if = f"tfp{tag}", f"tfh{tag}", f"tfn{tag}"
        third, fourth = random.randrange(256), random.randrange(64) * 4  # nosec B311 # a test subnet, not a secret
        self.host_addr, self.ns_addr = f"10.213.{third}.{fourth + 1}", f"10.213.{third}.{fourth + 2}"
        self.is_up = False

    def __enter__(self) -> NetnsLink:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            _ip("-n", self.name, "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if)
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.name, "link", "set", self.ns_if, "up")
            self.up()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)

    def down(self) -> None:
        _ip("-n", self.name, "link", "set", self.ns_if, "down")
        self.is_up = False

    def up(self) -> None:
        _ip("-n", self.name, "link", "set", self.ns_if, "up")
        self.is_up = True
