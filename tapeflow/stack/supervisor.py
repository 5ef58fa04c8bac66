"""Start, supervise, inspect and stop the embedded stack.

`up` takes an exclusive lock in `TAPEFLOW_HOME/run/` for as long as it runs, which is how a second
`up` knows one is already running. Services start in dependency order (broker, database), then the
setup steps run (migrations, topics); a service that dies is restarted with backoff, and the steps
that depend on it run again (both are idempotent: after a broker restart the topics are all there,
its log is on disk, and its clients reconnect by themselves). `down` works from any shell: it asks
the supervisor to stop, then makes sure no recorded process survives.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess  # nosec B404 # the supervisor starts the stack's services with fixed argument lists
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from typing import TextIO

from tapeflow.stack.app_services import app_services, bearer_headers, http_json
from tapeflow.stack.broker import KafkaBroker
from tapeflow.stack.postgres import EmbeddedPostgres
from tapeflow.stack.process import StackError, terminate
from tapeflow.stack.service import Service
from tapeflow.stack.steps import MigrationsStep, SetupStep, TopicsStep
from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.health import Health
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.process_records import ProcessRecord, process_create_time
from tapeflow_runtime.settings import Settings

Say = Callable[[str], None]

RESTART_LIMIT = 5  # restarts of one service within RESTART_WINDOW_S before the stack gives up
RESTART_WINDOW_S = 300.0
HELD_STATE = "disk-full"  # the state `status` shows for a service whose restart is held (`hold_restart`)
WAITING_STATE = "waiting"  # a service that died while another is held: restarted once none is
HELD_REFRESH_S = 5.0  # how often a held service's reason (its free space) is rewritten for `status`


def infra_services(settings: Settings, paths: StackPaths) -> list[Service]:
    return [KafkaBroker(settings, paths), EmbeddedPostgres(settings, paths)]


def default_services(settings: Settings, paths: StackPaths) -> list[Service]:
    """The services `up` runs, in start order."""
    return infra_services(settings, paths) + app_services(settings, paths)


def default_steps(settings: Settings, paths: StackPaths) -> list[SetupStep]:
    return [MigrationsStep(settings, paths), TopicsStep(settings, paths)]


#: what `up --only` starts whatever it names: every other service reads the broker or the database, and
#: the setup steps (migrations, topics) run with them
ALWAYS = ("broker", "database")


def parse_only(text: str | None) -> frozenset[str] | None:
    """`up --only sink,engine` -> {"sink", "engine"}; None (or nothing named) -> None, every service."""
    names = frozenset(w for w in (text or "").replace(",", " ").split() if w)
    return names or None


def select_services(services: list[Service], only: frozenset[str] | None) -> list[Service]:
    """The services of ``services`` that `up --only NAMES` runs, in start order: the broker and the database
    always, the named ones, and what a named one cannot run without (a replay's producer reads its fake
    exchange). A name this configuration does not run is an error that lists the ones it does (`ui` with
    TAPEFLOW_UI=false, `fake-exchange` without a replay source), so a typo never starts a partial stack."""
    if only is None:
        return list(services)
    known = [s.name for s in services]
    unknown = sorted(only - set(known) - set(ALWAYS))
    if unknown:
        raise StackError(
            f"up --only: {', '.join(unknown)} is not a service of this configuration; "
            f"the services are {', '.join(known)}"
        )
    wanted = set(only) | set(ALWAYS)
    if "producer" in wanted:
        wanted.add("fake-exchange")  # present only with --source replay:DIR, where the producer reads it
    return [s for s in services if s.name in wanted]


@dataclass
class ComponentStatus:
    name: str
    healthy: bool
    # running | external | stopped | stale | finished | priming | done | pending | failed | recovering
    # (alive, not serving yet) | restarting (dead, the supervisor's backoff) | disk-full (restart held)
    # | broker-unavailable (a producer whose broker refuses or does not answer)
    state: str
    address: str | None
    pid: int | None
    uptime_s: float | None
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


class _Running:
    def __init__(self, service: Service, proc: subprocess.Popen, record: ProcessRecord, log: TextIO):
        self.service, self.proc, self.record, self.log = service, proc, record, log
        self.restarts: list[float] = []


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        paths: StackPaths,
        say: Say = print,
        services: list[Service] | None = None,
        steps: list[SetupStep] | None = None,
    ) -> None:
        self.settings, self.paths, self.say = settings, paths, say
        self.services = services if services is not None else default_services(settings, paths)
        self.steps = steps if steps is not None else default_steps(settings, paths)
        self.running: dict[str, _Running] = {}
        self.addresses: dict[str, str] = {}
        self._lock_fd: int | None = None
        self.stop_requested = threading.Event()
        self._next_exchange_check = 0.0  # `_report_exchange`
        self._exchange_said: dict[str, str | None] = {}
        #: services whose restart is held (`hold_restart`): the reason said last and when
        self.held: dict[str, tuple[str, float]] = {}
        self.waiting: set[str] = set()  # held only because another service is (`_hold_behind`)

    # --- locking ---------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        self.paths.ensure()
        fd = os.open(self.paths.supervisor_lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            rec = ProcessRecord.load(self.paths.state_file("supervisor"))
            who = f" (supervisor pid {rec.pid})" if rec else ""
            raise StackError(
                f"tapeflow is already running in {self.paths.home}{who}; see `tapeflow status`, "
                "or stop it with `tapeflow down`"
            ) from None
        self._lock_fd = fd
        self._clear_stale_records()
        me = ProcessRecord(
            "supervisor",
            os.getpid(),
            process_create_time(os.getpid()),
            "-",
            time.time(),
            str(self.paths.log_file("supervisor")),
        )
        me.save(self.paths.state_file("supervisor"))

    def _clear_stale_records(self) -> None:
        for path in sorted(self.paths.run_dir.glob("*.json")):
            rec = ProcessRecord.load(path)
            if rec is None:
                continue
            name = rec.name
            if rec.is_alive() and name != "supervisor":
                # an orphan of a supervisor that was SIGKILLed: we hold the lock, so it is ours to stop
                self.say(f"{name}: stopping orphaned pid {rec.pid} left by a previous run")
                terminate(
                    rec.pid,
                    rec.create_time,
                    self.settings.stop_timeout_s,
                    rec.extra.get("stop_signal", int(signal.SIGTERM)),
                )
            elif not rec.is_alive() and not rec.extra.get("finished"):
                self.say(f"{name}: removing stale pid file (pid {rec.pid} is not running)")
            path.unlink(missing_ok=True)

    def release(self) -> None:
        self.paths.state_file("supervisor").unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- start -------------------------------------------------------------------------------------
    def start_all(self) -> float:
        """Start every service and run every step; returns seconds to a healthy stack."""
        t0 = time.monotonic()
        # steps run once the services they depend on are up and before anything that publishes:
        # a producer writing to a topic that does not exist yet would auto-create it wrongly
        # consecutive concurrent services (consumers) come up side by side: their group joins overlap
        pending = list(self.steps)
        coming_up: list[tuple[Service, float]] = []
        for service in self.services:
            if self.stop_requested.is_set():
                raise StackError("interrupted during startup")
            if not service.concurrent:
                self._wait_all(coming_up)
            for step in [s for s in pending if set(s.depends_on) <= set(self.addresses)]:
                self._run_step(step)
                pending.remove(step)
            started = time.monotonic()
            if self._start_service(service, wait=not service.concurrent):
                coming_up.append((service, started))
        self._wait_all(coming_up)
        for step in pending:
            self._run_step(step)
        return time.monotonic() - t0

    def _wait_all(self, coming_up: list[tuple[Service, float]]) -> None:
        for service, started in coming_up:
            self._finish_start(service, started)
        coming_up.clear()

    def _start_service(self, service: Service, wait: bool = True) -> bool:
        """Launch ``service``; with ``wait`` also wait until it is ready. True when it was launched
        and still has to be waited for (``_finish_start``)."""
        if service.external:
            address = service.external_address() or "?"
            health = service.health(address)
            if not health.ok:
                raise StackError(f"{service.name}: external {address} is not reachable: {health.detail}")
            self.addresses[service.name] = address
            self.say(f"{service.name:<10} external {address}: {health.detail}")
            return False
        t0 = time.monotonic()
        launch = service.prepare()
        log_path = self.paths.log_file(service.name)
        log = open(log_path, "ab", buffering=0)
        log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting: {' '.join(launch.argv)}\n".encode())
        try:
            proc = subprocess.Popen(
                launch.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,  # nosec B603 # the service's own fixed argument list, no shell
                start_new_session=True,
                cwd=launch.cwd,
                **launch.credentials(),
                env={**child_env(self.settings, self.paths), **(launch.env or {})},
            )
        except OSError as exc:
            log.close()
            raise StackError(f"{service.name}: cannot start {launch.argv[0]}: {exc.strerror}") from None
        record = ProcessRecord(
            service.name,
            proc.pid,
            process_create_time(proc.pid),
            launch.address,
            time.time(),
            str(log_path),
            extra={
                "stop_signal": int(service.stop_signal),
                "finite": service.finite,
                "health_url": service.health_url(launch.address),
                "bearer_token_file": str(service.bearer_token_file() or ""),
            },
        )
        record.save(self.paths.state_file(service.name))
        self.running[service.name] = _Running(service, proc, record, log)
        self.addresses[service.name] = launch.address
        if not wait:
            return True
        self._finish_start(service, t0)
        return False

    def _finish_start(self, service: Service, started: float) -> None:
        run = self.running[service.name]
        address = self.addresses[service.name]
        health = self._wait_healthy(service, run.proc, address, run.record.log)
        service.after_start(address)
        self.say(
            f"{service.name:<10} pid {run.proc.pid} on {address}: {health.detail} ({time.monotonic() - started:.1f}s)"
        )

    def _wait_healthy(self, service: Service, proc: subprocess.Popen, address: str, log_path) -> Health:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        health = Health(False, "not probed")
        while time.monotonic() < deadline and not self.stop_requested.is_set():
            if proc.poll() is not None:
                if proc.returncode == 0 and service.finite:
                    # a replay with nothing (left) to send ends at once, e.g. a producer restarted with its
                    # broker after the fake exchange's recording was played: done, not a failure (the
                    # watch loop records it as finished)
                    return Health(True, f"finished during startup: {_last_line(log_path)}")
                raise StackError(
                    f"{service.name} exited with code {proc.returncode} during startup: "
                    f"{_last_line(log_path)} (log: {log_path})"
                )
            health = service.ready(address)
            if health.ok:
                return health
            time.sleep(0.1)
        raise StackError(
            f"{service.name} not healthy after {self.settings.startup_timeout_s:.0f}s: "
            f"{health.detail} (log: {log_path})"
        )

    def _run_step(self, step: SetupStep) -> None:
        t0 = time.monotonic()
        summary = step.run(self.addresses, self.say)
        self.say(f"{step.name:<10} {summary} ({time.monotonic() - t0:.1f}s)")

    # --- supervise ---------------------------------------------------------------------------------
    def supervise(self, poll_s: float = 0.5) -> int:
        """Block until asked to stop; restart services that die. Returns the process exit code.

        A service whose restart must wait (`hold_restart`: the broker on a full log disk) is held, not
        restarted and not counted as a crash: the loop asks again every poll and restarts it once the
        reason is gone, while every other service goes on (no crash loop, no stack given up)."""
        while not self.stop_requested.wait(poll_s):
            self._report_exchange()
            for name, run in list(self.running.items()):
                code = run.proc.poll()
                if code is None:
                    continue
                if code == 0 and run.service.finite:
                    self._finished(name, run)
                    continue
                if name in self.held:
                    if self._still_held(name, run):
                        continue
                    delay = 0.0
                else:
                    reason = _hold_reason(run.service)
                    if reason is not None:
                        self._hold(name, run, code, reason)
                        continue
                    if self._held_for_themselves():  # its restart would find the held one (the broker) down
                        self._hold_behind(name, run, code)
                        continue
                    now = time.monotonic()
                    run.restarts = [t for t in run.restarts if now - t < RESTART_WINDOW_S] + [now]
                    if len(run.restarts) > RESTART_LIMIT:
                        self.say(
                            f"{name} died {len(run.restarts)} times in {RESTART_WINDOW_S:.0f}s; stopping the stack"
                        )
                        return 1
                    delay = min(2 ** (len(run.restarts) - 1), 30)
                    last = _last_line(run.record.log)
                    self.say(f"{name} exited with code {code}: {last}; restarting in {delay}s")
                    self._mark_down(run, "restarting", f"exited with code {code}: {last}; restarting in {delay}s")
                if delay and self.stop_requested.wait(delay):
                    break
                if not self._restart(name, run):
                    return 1
        return 0

    def _restart(self, name: str, run: _Running) -> bool:
        run.log.close()
        restarts = run.restarts
        del self.running[name]
        self.held.pop(name, None)
        self.waiting.discard(name)
        try:
            self._start_service(run.service)
            self.running[name].restarts = restarts
            for step in self.steps:
                if name in step.depends_on:
                    self._run_step(step)
        except TapeflowError as exc:
            if self.stop_requested.is_set():  # `down` cut the start's wait short: stopping, not a failure
                return True
            self.say(f"{name}: restart failed: {exc}")
            return False
        return True

    def _mark_down(self, run: _Running, state: str, detail: str) -> None:
        """Record in the service's state file why it is down and what happens next, for `status` (another
        process): "restarting" during the backoff, "disk-full" while held."""
        run.record.extra["down"] = {"state": state, "detail": detail, "since": time.time()}
        with contextlib.suppress(OSError):
            run.record.save(self.paths.state_file(run.service.name))

    def _hold(self, name: str, run: _Running, code: int, reason: str) -> None:
        self.held[name] = (reason, time.monotonic())
        self.say(
            f"{name}: {reason} (exited with code {code}: {_last_line(run.record.log)}); the rest of the stack goes on"
        )
        self._mark_down(run, HELD_STATE, reason)

    def _held_for_themselves(self) -> list[str]:
        """The held services that wait for their own reason (``hold_restart``), not behind another."""
        return sorted(n for n in self.held if n not in self.waiting)

    def _hold_behind(self, name: str, run: _Running, code: int) -> None:
        """``name`` died while another service is held (a client of a broker held on a full disk):
        restarting it now would fail at once on the missing broker, and a failed restart stops the
        whole stack. It waits, uncounted, and is restarted once nothing else is held."""
        others = self._held_for_themselves()
        reason = f"waiting for {', '.join(others)} ({self.held[others[0]][0]})"
        self.held[name] = (reason, time.monotonic())
        self.waiting.add(name)
        self.say(f"{name} exited with code {code}: {_last_line(run.record.log)}; {reason}")
        self._mark_down(run, WAITING_STATE, reason)

    def _still_held(self, name: str, run: _Running) -> bool:
        """Ask the held service again; say when the reason is gone (then it is restarted)."""
        if name in self.waiting:
            return bool(self._held_for_themselves())
        reason = _hold_reason(run.service)
        said, at = self.held[name]
        if reason is None:
            self.say(f"{name}: {said.split(' (')[0]}: cleared after {time.monotonic() - at:.0f}s; restarting")
            return False
        if reason != said and time.monotonic() - at >= HELD_REFRESH_S:  # the free space changed
            self.held[name] = (reason, time.monotonic())
            self._mark_down(run, HELD_STATE, reason)
        return True

    def _report_exchange(self, every_s: float = 2.0) -> None:
        """Say in the foreground output when a producer cannot reach its exchange or is refused by it
        (`unreachable`/`restricted`, with the one line of what to do), once per change, and when it
        answers again: `status` shows the same, but a user watching `up` should not have to ask."""
        now = time.monotonic()
        if now < self._next_exchange_check:
            return
        self._next_exchange_check = now + every_s
        for name, run in list(self.running.items()):
            if not name.startswith("producer") or run.proc.poll() is not None:
                continue
            url = run.record.extra.get("health_url")
            code, body = http_json(url) if url else (0, {})
            if code == 0:
                continue  # not answering (starting, stopping): the restart loop speaks for exits
            state = (
                body.get("status")
                if body.get("status") in ("unreachable", "restricted", "broker-unavailable")
                else None
            )
            said = self._exchange_said.get(name)
            if state is not None and said != state:
                self.say(f"{name:<10} {body.get('detail') or state}")
            elif state is None and said is not None:
                again = (
                    "the broker takes its records again"
                    if said == "broker-unavailable"
                    else "the exchange answers again"
                )
                self.say(f"{name:<10} {again}: {body.get('status')}")
            self._exchange_said[name] = state

    def _finished(self, name: str, run: _Running) -> None:
        """A finite service (a replay) completed: keep its record as 'finished', never restart it."""
        del self.running[name]
        run.log.close()
        run.record.extra.update(finished=True, exit_code=0, finished_at=time.time(), detail=_last_line(run.record.log))
        run.record.save(self.paths.state_file(name))
        self.say(f"{name:<10} finished: {run.record.extra['detail']}")

    # --- stop --------------------------------------------------------------------------------------
    def stop_all(self) -> None:
        """Stop the running services in the reverse of their start order (clients before the broker and
        the database they need to stop cleanly). The order is the services' own, not ``running``'s: a
        restarted service is inserted there again, last, so after a broker restart the broker was stopped
        first and the sink, engine and executor, whose clean stop commits to it, each waited out their
        stop timeout and were killed (a `down` took 39 s instead of 13)."""
        order = {service.name: i for i, service in enumerate(self.services)}
        for name in sorted(self.running, key=lambda n: order.get(n, len(order)), reverse=True):
            run = self.running.pop(name)
            result = terminate(
                run.proc.pid, run.record.create_time, self.settings.stop_timeout_s, run.service.stop_signal
            )
            run.proc.poll()
            run.log.close()
            self.paths.state_file(name).unlink(missing_ok=True)
            self.say(f"{name:<10} {result}")


def _with_history(settings: Settings, name: str, address: str, health: Health) -> str:
    """The broker's detail with the time of the oldest trade it keeps (``md.trades``: its first record
    over the partitions, one record read per partition); other components' detail as it is."""
    if name != "broker" or not health.ok:
        return health.detail
    from tapeflow.topic_times import format_ms, topic_spans

    topic = settings.topic_prefix + "md.trades"
    try:
        span = topic_spans(address, [topic], newest=False, timeout_s=3.0).get(topic)
    except Exception as exc:  # noqa: BLE001 - the broker answered its health probe; the history is extra
        return f"{health.detail}; {topic}: not read ({str(exc).strip()[:120]})"
    if span is None:
        return f"{health.detail}; {topic} does not exist"
    if span.first_ms is None:
        return f"{health.detail}; {topic} empty"
    return f"{health.detail}; {topic} since {format_ms(span.first_ms)}"


def _starting_detail(service: Service, rec: ProcessRecord) -> str | None:
    """What a live service that does not answer yet is doing (`recovery_detail`), or None when it has
    finished starting (then it is running and unhealthy) or cannot say."""
    detail = getattr(service, "recovery_detail", None)
    return detail(rec.log, rec.pid) if detail is not None else None


def _app_status(rec: ProcessRecord, now: float, path=None) -> ComponentStatus:
    if not rec.extra.get("finished") and rec.extra.get("finite") and not rec.is_alive() and path is not None:
        # a finite service that just exited: the supervisor records the outcome within a poll interval
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not rec.extra.get("finished"):
            time.sleep(0.1)
            rec = ProcessRecord.load(path) or rec
    if rec.extra.get("finished"):
        return ComponentStatus(
            rec.name, True, "finished", rec.address, None, None, f"finished: {rec.extra.get('detail', '')}"
        )
    if not rec.is_alive():
        return _down_status(rec) or ComponentStatus(
            rec.name, False, "stale", rec.address, rec.pid, None, f"pid {rec.pid} is not running (stale pid file)"
        )
    url = rec.extra.get("health_url")
    code, body = (
        http_json(url, headers=bearer_headers(rec.extra.get("bearer_token_file")))
        if url
        else (0, {"error": "no health endpoint"})
    )
    if code != 200 and rec.extra.get("finite") and path is not None:
        # a finite service (the producer of a replay) closes its endpoint first when it ends: give
        # it the time to exit, then report what the supervisor records (finished, or a crash)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and rec.is_alive():
            time.sleep(0.1)
        if not rec.is_alive():
            return _app_status(rec, now, path)
    detail = body.get("detail") or body.get("status") or body.get("error") or f"HTTP {code}"
    if "finished" in body:  # the fake exchange's replay status
        detail = "replay finished" if body["finished"] else "replaying"
    # a producer's warm start, or an exchange it cannot reach / that refuses this location (the detail says
    # what to do)
    state = (
        body.get("status")
        if body.get("status") in ("priming", "unreachable", "restricted", "broker-unavailable")
        else "running"
    )
    return ComponentStatus(rec.name, code == 200, state, rec.address, rec.pid, now - rec.started_at, detail)


def _hold_reason(service: Service) -> str | None:
    hold = getattr(service, "hold_restart", None)
    return hold() if hold is not None else None


def _down_status(rec: ProcessRecord) -> ComponentStatus | None:
    """A dead service the supervisor is about to restart, or holds (its state file says why)."""
    down = rec.extra.get("down")
    if not down:
        return None
    return ComponentStatus(
        rec.name,
        False,
        down.get("state", "restarting"),
        rec.address,
        None,
        None,
        f"{rec.name}: {down.get('detail', '')}",
    )


def _last_line(log_path) -> str:
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip()[:300] if lines else "no output"
    except OSError:
        return "no log"


def run_foreground(settings: Settings, paths: StackPaths, say: Say = print, only: frozenset[str] | None = None) -> int:
    """`tapeflow up`: start everything (`only`: the services `select_services` keeps), report, supervise
    until SIGINT/SIGTERM, then stop everything."""
    sup = Supervisor(settings, paths, say, services=select_services(default_services(settings, paths), only))
    sup.acquire_lock()

    def _stop(signum, _frame):
        sup.stop_requested.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    code = 0
    try:
        try:
            elapsed = sup.start_all()
            say(
                f"stack healthy in {elapsed:.1f}s (home {paths.home}); `tapeflow status` to inspect, "
                "Ctrl-C or `tapeflow down` to stop"
            )
            if "ui" in sup.addresses:  # the token only to a terminal: a detached supervisor's stdout is its log
                say(ui_line(sup.addresses["ui"], paths, with_token=sys.stdout.isatty()))
        except TapeflowError as exc:
            say(f"error: {exc}")
            code = 1
        if code == 0:
            code = sup.supervise()
    finally:
        say("stopping")
        sup.stop_all()
        sup.release()
        for s, h in old.items():
            signal.signal(s, h)
    return code


def start_detached(settings: Settings, paths: StackPaths, say: Say = print, only: frozenset[str] | None = None) -> int:
    """`tapeflow up --detach`: run the supervisor in the background and wait until it is healthy."""
    select_services(default_services(settings, paths), only)  # a name it does not run fails here, in one line
    paths.ensure()
    rec = ProcessRecord.load(paths.state_file("supervisor"))
    if rec is not None and rec.is_alive():
        raise StackError(
            f"tapeflow is already running in {paths.home} (supervisor pid {rec.pid}); "
            "see `tapeflow status`, or stop it with `tapeflow down`"
        )
    log_path = paths.log_file("supervisor")
    with open(log_path, "ab") as log:
        start = log.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tapeflow", "up", *(["--only", ",".join(sorted(only))] if only else [])],
            stdin=subprocess.DEVNULL,  # nosec B603 # the stack's own fixed argument list, no shell
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=child_env(settings, paths),
        )
    # the supervisor bounds each service's start (startup_timeout_s) and exits when one fails: wait while
    # it makes progress (a line per service started), so a stack that starts slowly on a loaded machine is
    # not reported failed (and left running) while it is still coming up, as a fixed deadline for the
    # whole stack (startup_timeout_s + 15, when one service may take startup_timeout_s) did at load 25
    patience = settings.startup_timeout_s + 15
    deadline, seen = time.monotonic() + patience, 0
    while time.monotonic() < deadline:
        code = proc.poll()
        text = _read_from(log_path, start)
        if len(text) > seen:
            deadline, seen = time.monotonic() + patience, len(text)
        if "stack healthy in" in text:
            for line in text.splitlines():
                say(line)
            say(f"running in the background (supervisor pid {proc.pid}, log {log_path})")
            ui = ProcessRecord.load(paths.state_file("ui"))
            if ui is not None and ui.is_alive():
                say(ui_line(ui.address, paths, with_token=True))
            return 0
        if code is not None:
            for line in text.splitlines():
                say(line)
            return code or 1
        time.sleep(0.1)
    say(f"the stack did not become healthy in time; see {log_path}")
    return 1


def ui_line(address: str, paths: StackPaths, with_token: bool) -> str:
    """What `up` prints about the web UI: the login URL with the token (as Jupyter does) to a terminal,
    or where the URL is (``tapeflow ui --print-url``) when the output is a log file."""
    from tapeflow_ui.security import load_token
    from tapeflow_ui.service import login_url

    if with_token:
        return f"ui         open {login_url(address, load_token(paths))}"
    return f"ui         http://{address}/ (the login URL with its token: `tapeflow ui --print-url`)"


def child_env(settings: Settings, paths: StackPaths) -> dict[str, str]:
    """Environment for processes we spawn: same settings sources, including a `--config` file."""
    env = {
        **os.environ,
        "TAPEFLOW_HOME": str(paths.home),
        "TAPEFLOW_SOURCE": settings.source,
        "TAPEFLOW_REPLAY_SPEED": settings.replay_speed,
        "TAPEFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "TAPEFLOW_NAMESPACE": settings.namespace,
    }
    if settings.config_file:
        env["TAPEFLOW_CONFIG"] = os.path.abspath(settings.config_file)
    return env


def _read_from(path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def stop_stack(settings: Settings, paths: StackPaths, say: Say = print) -> int:
    """`tapeflow down`: stop the supervisor, then any recorded process that survived it."""
    stopped = 0
    sup = ProcessRecord.load(paths.state_file("supervisor"))
    if sup is not None:
        if sup.is_alive():
            result = terminate(sup.pid, sup.create_time, settings.stop_timeout_s * 3 + 5)
            say(f"supervisor pid {sup.pid}: {result}")
            stopped += 1
        else:
            say(f"supervisor: removing stale pid file (pid {sup.pid} is not running)")
        paths.state_file("supervisor").unlink(missing_ok=True)
    for path in sorted(paths.run_dir.glob("*.json")) if paths.run_dir.exists() else []:
        rec = ProcessRecord.load(path)
        if rec is None or rec.name == "supervisor":
            continue
        if rec.is_alive():
            sig = rec.extra.get("stop_signal", int(signal.SIGTERM))
            result = terminate(rec.pid, rec.create_time, settings.stop_timeout_s, sig)
            say(f"{rec.name} pid {rec.pid}: {result}")
            stopped += 1
        elif not rec.extra.get("finished"):
            say(f"{rec.name}: removing stale pid file (pid {rec.pid} is not running)")
        path.unlink(missing_ok=True)
    if not stopped:
        say(f"nothing running in {paths.home}")
    return 0


def stack_status(settings: Settings, paths: StackPaths, names: Collection[str] | None = None) -> list[ComponentStatus]:
    """Health of every component (``names``: of those only, each exactly as among all of them); probes
    run against what the state files say is running. Probing costs: a whole status took ~120 ms of CPU
    (database connections, Kafka admin clients, every service's /health), which a caller that polls one
    component several times a second need not pay."""
    wanted: Callable[[str], bool] = (lambda _: True) if names is None else set(names).__contains__
    now = time.time()
    sup = ProcessRecord.load(paths.state_file("supervisor"))
    sup_alive = sup is not None and sup.is_alive()
    out = [_supervisor_status(sup, sup_alive, now)] if wanted("supervisor") else []
    steps = [step for step in default_steps(settings, paths) if wanted(step.name)]
    addresses: dict[str, str] = {}  # infrastructure that answers, for the setup steps' probes
    services = infra_services(settings, paths)
    for service in services:
        if not wanted(service.name) and not any(service.name in step.depends_on for step in steps):
            continue
        status = _infra_status(settings, paths, service, sup_alive, now)
        if status.state in ("external", "running") and status.address is not None:  # probed, healthy or not
            addresses[service.name] = status.address
        if wanted(service.name):
            out.append(status)
    infra = {s.name for s in services}
    for path in sorted(paths.run_dir.glob("*.json")) if paths.run_dir.exists() else []:
        rec = ProcessRecord.load(path)
        if rec is None or rec.name in infra or rec.name == "supervisor" or not wanted(rec.name):
            continue
        out.append(_app_status(rec, now, path))
    out.extend(_step_status(step, addresses) for step in steps)
    return out


def _supervisor_status(sup: ProcessRecord | None, alive: bool, now: float) -> ComponentStatus:
    return ComponentStatus(
        "supervisor",
        alive,
        "running" if alive else ("stale" if sup else "stopped"),
        None,
        sup.pid if sup else None,
        now - sup.started_at if sup is not None and alive else None,
        "" if alive else "not running (start with `tapeflow up`)",
    )


def _infra_status(
    settings: Settings, paths: StackPaths, service: Service, sup_alive: bool, now: float
) -> ComponentStatus:
    """The broker or the database: external (probed at its address), or the process its state file names."""
    if service.external:
        address = service.external_address() or "?"
        health = service.health(address)
        return ComponentStatus(
            service.name,
            health.ok,
            "external",
            address,
            None,
            None,
            _with_history(settings, service.name, address, health),
        )
    rec = ProcessRecord.load(paths.state_file(service.name))
    if rec is None or not rec.is_alive():
        return _infra_down_status(service.name, rec, sup_alive)
    starting = _starting_detail(service, rec)
    if starting is not None:  # alive, not serving yet: Kafka's log recovery after a kill, say
        return ComponentStatus(service.name, False, "recovering", rec.address, rec.pid, now - rec.started_at, starting)
    health = service.health(rec.address)
    return ComponentStatus(
        service.name,
        health.ok,
        "running",
        rec.address,
        rec.pid,
        now - rec.started_at,
        _with_history(settings, service.name, rec.address, health),
    )


def _infra_down_status(name: str, rec: ProcessRecord | None, sup_alive: bool) -> ComponentStatus:
    if rec is not None and sup_alive:  # died: the supervisor restarts it (or holds it, and says why)
        return _down_status(rec) or ComponentStatus(
            name, False, "restarting", rec.address, None, None, f"pid {rec.pid} exited; the supervisor restarts it"
        )
    return ComponentStatus(
        name,
        False,
        "stale" if rec else "stopped",
        rec.address if rec else None,
        rec.pid if rec else None,
        None,
        f"pid {rec.pid} is not running (stale pid file)" if rec else "not running",
    )


def _step_status(step: SetupStep, addresses: dict[str, str]) -> ComponentStatus:
    """A setup step (migrations, topics): pending until what it needs answers, then its own probe."""
    if not all(dep in addresses for dep in step.depends_on):
        return ComponentStatus(
            step.name, False, "pending", None, None, None, "waiting for " + ", ".join(step.depends_on)
        )
    health = step.health(addresses)
    return ComponentStatus(step.name, health.ok, "done" if health.ok else "failed", None, None, None, health.detail)
