"""`tapeflow ARGS` as a process of its own, forked from one that has already imported the CLI.

Why: the one-line-error tests run a command many times over (9-11 bad inputs each) only to read its exit
code and stderr, and each `python -m tapeflow` paid the interpreter start and the imports before it
could refuse its input: 0.2 CPU-s for `strategy`, 0.8-1.0 for `model train` and `backtest` (pandas,
pyarrow, the backtest runner). Here one server process per pytest worker imports them once and forks a
child per command; the child is a process of its own as `python -m tapeflow` is (its own stdout and stderr,
the file descriptors 1 and 2 themselves, so what any library or C extension writes is captured; its own
environment, working directory and exit code), and runs the console entry point `tapeflow.cli.main`
with `sys.argv` set, as `tapeflow/__main__.py` does, and ends as the interpreter does (exit code from
`sys.exit`, an uncaught exception's traceback, non-daemon threads joined, atexit handlers run). The
server never configures logging nor opens a client, so nothing of one command reaches another. What it cannot prove is the import of the CLI under
the command's own environment: each test module keeps at least one real `python -m tapeflow` run.

A fork server because the pytest worker itself must not fork (librdkafka's and the broker clients'
threads); the standard library's `multiprocessing` forkserver hands back no exit code, stdout or stderr
of a process that ends in `sys.exit`, so the protocol is a JSON line each way over pipes.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: imported by the server at its start; a request names what else its command imports before it can refuse
#: an input (`backtest.runner`, `backtest.research.model_data`): imported once, by the workers that need it
PRELOAD = ("tapeflow.cli", "tapeflow_runtime.settings")


def _child(request: dict) -> None:
    """In the forked child: become `tapeflow ARGS` and end as `python -m tapeflow` ends (never returns)."""
    os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True, errors="backslashreplace")
    # as `python -m tapeflow` sets them (click names the program after them in usage lines)
    spec = importlib.util.find_spec("tapeflow.__main__")
    assert spec is not None and spec.origin is not None
    main_module = sys.modules["__main__"]
    main_module.__spec__, main_module.__package__ = spec, "tapeflow"
    sys.argv = [spec.origin, *request["args"]]
    code = 0
    try:
        from tapeflow.cli import main

        main()
    except SystemExit as exc:  # as the interpreter maps sys.exit's argument to an exit code
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # uncaught: its traceback on stderr and exit code 1, as the interpreter does
        sys.excepthook(*sys.exc_info())
        code = 1
    _finalize(code)


def _finalize(code: int) -> None:
    """The interpreter's exit, less the teardown of every module: non-daemon threads joined, atexit handlers
    run, the streams flushed. (Tearing the modules down as well made each forked command cost ~0.25 CPU-s:
    it touches every object the server imported, copying its pages.)"""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # the interpreter's own call at exit; private, stable since Python 3.0
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed by the command: nothing left to write
            pass
    os._exit(code & 0xFF)


def serve() -> None:
    """The server: one JSON request a line on stdin, answers `{"pid": N}` then `{"rc": N}` on stdout."""
    os.chdir(REPO)
    for name in PRELOAD:
        importlib.import_module(name)
    answers = sys.stdout
    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        for name in request["preload"]:
            importlib.import_module(name)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), file=answers, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), file=answers, flush=True)


class CliForks:
    """A client of one fork server (started on first use, stopped at exit or when its pipe closes)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _server(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.cli_fork"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env=env,
            )
            atexit.register(self.close)
            self._answer(120)
        return self._proc

    def _answer(self, timeout: float) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the tapeflow fork server did not answer within {timeout} s (exit {self._proc.poll()})")
        return json.loads(line)

    def run(
        self, args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120, preload: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess:
        """`tapeflow ARGS` with exactly `env` in `cwd`: its exit code, stdout and stderr (`preload`: modules
        the server imports first, once)."""
        with self._lock, tempfile.TemporaryDirectory(prefix="tapeflow-fork-") as tmp:
            server = self._server()
            assert server.stdin is not None
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {
                "args": list(args),
                "preload": list(preload),
                "env": env,
                "cwd": str(cwd),
                "stdout": str(out),
                "stderr": str(err),
            }
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            pid = self._answer(30)["pid"]
            try:
                rc = self._answer(timeout)["rc"]
            except RuntimeError:
                os.killpg(pid, signal.SIGKILL)
                self._answer(30)  # its exit code: the next request's answers stay in step
                raise subprocess.TimeoutExpired(["tapeflow", *args], timeout) from None
            return subprocess.CompletedProcess(
                ["tapeflow", *args], rc, out.read_text(errors="replace"), err.read_text(errors="replace")
            )

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # the server's loop ends at EOF
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


#: this pytest process's fork server
FORKS = CliForks()


def tapeflow_forked(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 120, preload: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """`tapeflow ARGS` run by this worker's fork server (see the module docstring)."""
    return FORKS.run(list(args), env, cwd, timeout, preload)


if __name__ == "__main__":
    serve()
