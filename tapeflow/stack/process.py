"""Process control for supervised services: termination, ports. (State files and liveness are the
runtime's `tapeflow_runtime.process_records`, because services read them too.)"""

from __future__ import annotations

import errno
import os
import random
import signal
import socket
import sys
import threading
import time

import psutil

from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.process_records import pid_matches


class StackError(TapeflowError):
    """A stack problem with a one-line message for the user."""


def terminate(pid: int, create_time: float, timeout: float, sig: int = signal.SIGTERM) -> str:
    """Stop a process politely: `sig` (SIGTERM), wait up to `timeout`, then SIGKILL.

    Returns "terminated", "killed" or "gone". When the process leads its own process group (services
    are started in their own session) the whole group is signalled, so children such as PostgreSQL
    backends go too; a process sharing someone else's group (a foreground supervisor started from
    a shell) is signalled alone, never its shell.
    """
    if not pid_matches(pid, create_time):
        return "gone"
    _signal(pid, sig)
    if _wait_gone(pid, create_time, timeout):
        return "terminated"
    _signal(pid, signal.SIGKILL)
    _wait_gone(pid, create_time, 5.0)
    return "killed"


def _signal(pid: int, sig: int) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, create_time: float, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # reap if it is our child, so it does not linger as a zombie
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not pid_matches(pid, create_time):
            return True
        time.sleep(0.05)
    return not pid_matches(pid, create_time)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, for a child process to listen on a moment later, drawn at random from *below*
    the kernel's ephemeral range (``net.ipv4.ip_local_port_range``) and reserved against every other
    caller of this function on the machine for `RESERVE_S`.

    Why not ``bind(0)``: that port comes from the ephemeral range, which every outgoing connection of
    every process also draws from, so between this call and the child's bind a client socket could
    take it ("Address already in use": seen once in the test suite, which opens thousands of
    connections in parallel). Below the range only another listener can collide, and the likeliest
    one is another caller of this function whose child has not bound yet (seen once in CI: a sink
    starting for seconds under load lost its port to a parallel test). `_reserve` closes that gap.
    Falls back to ``bind(0)`` when the range leaves nothing below it."""
    low = _ephemeral_low()
    if low > 2_048:
        rng = random.SystemRandom()
        for _ in range(64):
            port = rng.randrange(max(1_024, low // 3), low)
            if not _reserve(port):
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


RESERVE_S = 300.0  # longer than any child takes to bind its port, a PostgreSQL initdb included
_reserved: dict[int, tuple[float, socket.socket | None]] = {}
_reserve_lock = threading.Lock()


def _reserve(port: int) -> bool:
    """Claim ``port`` for this process for `RESERVE_S`, or False when another process (or this one)
    holds it. The claim is an AF_UNIX socket bound to an abstract name (Linux: no file anywhere,
    released by the kernel when the holder exits), so test workers and stacks that never heard of
    each other still skip each other's ports; hand-rolled because no library offers a cross-process
    port lease without a shared directory."""
    with _reserve_lock:
        now = time.monotonic()
        for held, (at, sock) in list(_reserved.items()):
            if now - at > RESERVE_S:
                if sock is not None:
                    sock.close()
                del _reserved[held]
        if port in _reserved:
            return False
        claim = None
        if sys.platform.startswith("linux"):  # elsewhere: this process's own claims only
            claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                claim.bind(f"\0tapeflow-port-{port}")
            except OSError:
                claim.close()
                return False
        _reserved[port] = (now, claim)
        return True


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def check_port_free(host: str, port: int, what: str, setting: str) -> None:
    """Fail with a clear message when a configured port is taken (instead of a cryptic bind error)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # like the servers themselves: connections of a just-stopped server lingering in TIME_WAIT
        # must not count as "in use", only a live listener does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                owner = _port_owner(port)
                raise StackError(
                    f"{what} port {host}:{port} is already in use{owner}; "
                    f"free it or set {setting} to another port (0 picks a free one)"
                ) from None
            raise


def _port_owner(port: int) -> str:
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        pass
    return ""


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False
