"""The embedded broker's class-data-sharing archive (AppCDS), made once per user by the bootstrap.

A Kafka broker loads and verifies ~5,000 classes from 45 jars at every start: about 3.5 CPU-s of its
~4-s start on our 2-core machine. A dynamic CDS archive (JDK 13+: ``-XX:ArchiveClassesAtExit``) holds
those classes pre-parsed; a JVM started with ``-XX:SharedArchiveFile`` maps it instead. Measured on
this machine under load: 2.0-2.2 CPU-s to a listening broker against 3.3-3.6 without.

How it is made: a throwaway broker in a temporary home, with exactly the options ``KafkaBroker``
starts with, is started, asked for metadata (so the request path's classes load too) and stopped
with SIGTERM; the JVM writes the archive as it exits. It is written under a temporary name and
renamed into place (``kafka_libs.cds_archive``: named by the JVM and the jars), so a broker never maps
a half-written file, and two bootstraps at once each finish with a whole archive. Nothing depends on
it: without it (a failed build, an installed wheel that never ran the bootstrap) the broker starts as
before. Run as ``python -m tapeflow.stack.broker_cds`` (the bootstrap does, after the jars).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess  # nosec B404 # a fixed argument list: the broker's own launch
import sys
import tempfile
import time
from pathlib import Path

from tapeflow.stack.broker import KafkaBroker
from tapeflow.stack.kafka_libs import KafkaSetupError, cds_archive, java_binary, resolve
from tapeflow.stack.process import StackError
from tapeflow_runtime.kafka_client import broker_health
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings

START_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 240.0  # a controlled shutdown, then the archive written: a minute or more on a loaded machine


class CdsError(RuntimeError):
    """The archive could not be made; the broker still starts without it."""


def build(say=lambda m: None) -> Path:
    """The archive of this JVM and these jars, made now if missing (module docstring)."""
    try:
        java, libs = java_binary(), resolve()
    except KafkaSetupError as exc:
        raise CdsError(str(exc)) from None
    target = cds_archive(java, libs)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    say(f"making the broker's class-data-sharing archive {target} (once per user, ~10 s)")
    home = Path(tempfile.mkdtemp(prefix="tapeflow-cds-"))
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        _dump(home, part)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)
    return target


def _dump(home: Path, part: Path) -> None:
    paths = StackPaths(home)
    paths.ensure()
    settings = Settings(home=home, broker=None, database_url=None, broker_port=0, database_port=0)
    try:
        launch = KafkaBroker(settings, paths).prepare()
    except StackError as exc:
        raise CdsError(str(exc)) from None
    argv = [launch.argv[0], f"-XX:ArchiveClassesAtExit={part}", *launch.argv[1:]]
    with open(home / "broker.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)  # nosec B603 # the broker's own argv
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not broker_health(launch.address, timeout=2.0).ok:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise CdsError(f"the throwaway broker did not start: {_tail(home / 'broker.log')}")
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise CdsError(f"the throwaway broker did not stop within {EXIT_TIMEOUT_S:.0f} s") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if code not in (0, 143) or not part.is_file() or part.stat().st_size == 0:
        raise CdsError(f"the broker exited {code} without writing the archive: {_tail(home / 'broker.log')}")


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def main() -> int:
    try:
        print(build(say=lambda m: print(f"[kafka] {m}", file=sys.stderr)))
    except CdsError as exc:
        print(f"[kafka] no class-data-sharing archive (the broker starts without it, slower): {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
