"""Apache Kafka's runtime jars for the embedded broker: resolved from Maven Central once per user.

`deploy/kafka/pom.xml` pins the broker (``kafka_2.13``) and the SLF4J binding for log4j2 that only the
release tarball carries. Maven copies the POM's runtime dependencies into a per-user cache directory
keyed by the POM's hash (``$XDG_CACHE_HOME/tapeflow/kafka-<hash>``), so a second clone, a second home
or the test suite reuses them; Maven's own ``~/.m2`` makes a re-resolution after a POM change fetch
only what changed. A directory is used only once complete (``COMPLETE`` marker written last), so an
interrupted download is never taken for a classpath.

Why Maven and not a tarball: the machines we support reach Maven Central but not downloads.apache.org,
and the POM makes the version a reviewed, hashed input. Run as ``python -m tapeflow.stack.kafka_libs``
(the bootstrap does) to resolve ahead of ``tapeflow up``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess  # nosec B404 # fixed argument lists: java -version, mvn copy-dependencies
import sys
import tempfile
from pathlib import Path

from tapeflow_runtime.errors import TapeflowError

POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
COMPLETE = "COMPLETE"
MIN_JAVA = 17
#: settable to a directory of jars prepared elsewhere (an offline machine)
LIBS_ENV = "TAPEFLOW_KAFKA_LIBS"


class KafkaSetupError(TapeflowError):
    """The embedded Kafka cannot be set up; the message says what to do, in one line."""


def kafka_version(pom: Path = POM) -> str:
    text = pom.read_text()
    found = re.search(r"<artifactId>kafka_2\.13</artifactId>\s*<version>([^<]+)</version>", text)
    return found.group(1) if found else "?"


def cache_dir(pom: Path = POM) -> Path:
    """Where this POM's jars live: settable with ``TAPEFLOW_KAFKA_LIBS``, else the per-user cache
    (``$XDG_CACHE_HOME``, or ``~/.cache`` when that already holds them: a user who set
    ``XDG_CACHE_HOME`` later, or a process given its own, still finds the jars resolved before)."""
    override = os.environ.get(LIBS_ENV)
    if override:
        return Path(override).expanduser()
    name = f"kafka-{hashlib.sha256(pom.read_bytes()).hexdigest()[:16]}"
    xdg = os.environ.get("XDG_CACHE_HOME")
    default = Path.home() / ".cache" / "tapeflow" / name
    if xdg:
        mine = Path(xdg) / "tapeflow" / name
        return default if not is_complete(mine) and is_complete(default) else mine
    return default


def is_complete(libs: Path) -> bool:
    if os.environ.get(LIBS_ENV) and libs == Path(os.environ[LIBS_ENV]).expanduser():
        return any(libs.glob("kafka_2.13-*.jar"))  # a user's own directory carries no marker
    return (libs / COMPLETE).is_file() and any(libs.glob("kafka_2.13-*.jar"))


def java_binary() -> str:
    """A Java >= 17 runtime: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidate = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not candidate or not os.access(candidate, os.X_OK):
        raise KafkaSetupError(
            f"no Java runtime found (the embedded Kafka needs Java >= {MIN_JAVA}): install one "
            "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless; `make run` does it as root) or set JAVA_HOME"
        )
    try:
        out = subprocess.run([candidate, "-version"], capture_output=True, text=True, timeout=30)  # nosec B603 # fixed argument list, no shell
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaSetupError(f"{candidate} -version failed: {exc}") from None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(found.group(1)) if found else 0
    if major == 1 and found and found.group(2):  # "1.8.0_x" is Java 8
        major = int(found.group(2))
    if major < MIN_JAVA:
        raise KafkaSetupError(
            f"{candidate} is Java {major or '?'}; the embedded Kafka needs Java >= {MIN_JAVA} "
            "(install openjdk-17-jre-headless or set JAVA_HOME to a newer one)"
        )
    return candidate


def resolve(pom: Path = POM, say=lambda m: None) -> Path:
    """The directory of the POM's jars, downloading them with Maven when the cache lacks them."""
    libs = cache_dir(pom)
    if is_complete(libs):
        return libs
    if os.environ.get(LIBS_ENV):
        raise KafkaSetupError(
            f"{LIBS_ENV}={libs} holds no kafka_2.13 jar; fill it with "
            f"`mvn -f {pom} dependency:copy-dependencies -DoutputDirectory={libs}` or unset it"
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaSetupError(
            f"Apache Kafka's libraries are not in {libs} and Maven is not installed to fetch them: install Maven "
            "(Debian/Ubuntu: apt-get install maven; `make run` does it as root), or fill that directory on "
            f"another machine with `mvn -f deploy/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=DIR`"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    say(f"resolving Apache Kafka {kafka_version(pom)} from Maven Central into {libs} (once per user)")
    staging = Path(tempfile.mkdtemp(prefix=libs.name + ".part-", dir=libs.parent))
    try:
        try:
            done = subprocess.run(  # nosec B603 # fixed argument list
                [
                    mvn,
                    "-B",
                    "-q",
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={staging}",
                ],
                capture_output=True,
                text=True,
                timeout=900,
            )
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            why = "timed out after 900 s" if done is None else _maven_error(done.stdout + done.stderr)
            raise KafkaSetupError(
                f"could not download Apache Kafka {kafka_version(pom)} from Maven Central ({why}); on a machine "
                f"that can, run `mvn -f deploy/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=DIR` "
                f"and copy DIR's jars into {libs} (or point {LIBS_ENV} at them)"
            )
        (staging / COMPLETE).write_text(kafka_version(pom) + "\n")
        if libs.exists():  # an incomplete directory of an earlier, interrupted run
            shutil.rmtree(libs)
        staging.rename(libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def _maven_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if "[ERROR]" in ln and ln.strip() != "[ERROR]"]
    return (lines[0].replace("[ERROR] ", "")[:200] if lines else "mvn failed") if lines or output else "mvn failed"


def classpath(libs: Path) -> str:
    return str(libs / "*")


def cds_archive(java: str, libs: Path) -> Path:
    """Where the broker's class-data-sharing archive for this JVM and these jars lives (``broker_cds``):
    the per-user cache, found as ``cache_dir`` finds the jars (``$XDG_CACHE_HOME``, or ``~/.cache`` when
    only that holds it), named by the jars' directory and the JVM binary (real path, size, time), so
    an upgraded JVM or another Kafka never maps an archive made for something else."""
    real = Path(java).resolve()
    st = real.stat()
    key = hashlib.sha256(f"{real}:{st.st_size}:{st.st_mtime_ns}:{libs.resolve()}".encode()).hexdigest()[:16]
    name = f"kafka-cds-{key}.jsa"
    default = Path.home() / ".cache" / "tapeflow" / name
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        mine = Path(xdg) / "tapeflow" / name
        return default if not mine.is_file() and default.is_file() else mine
    return default


def main() -> int:
    try:
        java_binary()
        libs = resolve(say=lambda m: print(f"[kafka] {m}", file=sys.stderr))
    except KafkaSetupError as exc:
        print(f"[kafka] error: {exc}", file=sys.stderr)
        return 1
    print(libs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
