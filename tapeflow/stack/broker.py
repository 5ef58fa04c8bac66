"""The embedded broker: Apache Kafka, one combined KRaft node (broker and controller in one JVM).

Its log lives under ``TAPEFLOW_HOME/kafka/data``, so topics survive ``down``/``up``; the storage is
formatted once with a cluster id kept in ``TAPEFLOW_HOME/kafka/cluster.id`` (a data directory
formatted by another cluster is refused, never reformatted). Listeners are loopback only, on free
ports (a restart keeps the ports it had when they are still free). log4j2 writes to the process's
stdout, which the supervisor appends to ``logs/broker.log``. SIGTERM is Kafka's controlled shutdown.

``TAPEFLOW_BROKER=host:port`` switches to an external Kafka and this service is then only probed.

Faults. After a SIGKILL the restarted broker runs Kafka's log recovery (``LogLoader``:
"Recovering unflushed segment", producer-state rebuilds) before it listens; `recovery_detail` reads
that from its log so `tapeflow status` says "recovering" with the line, not "stopped". A full log
disk: Kafka marks the log directory offline on the failed append and, with its only directory gone,
shuts down (exit code 1, "Shutdown broker because all log dirs in ... have failed"); `hold_restart`
tells the supervisor to wait (not a crash, not counted against its restart limit) until
`restart_free_bytes` are free again, saying "log disk full (<dir>, N MB free)" meanwhile.

The JVM settings are for a single machine that also runs the rest of the stack: a bounded heap, the
serial collector, C1 only (``TieredStopAtLevel=1``: a broker at a few thousand records/s gains little
from C2, which costs memory and start-up CPU), and the metadata timer stretched
(``metadata.max.idle.interval.ms``: a single node has nobody to tell), which together halve the idle
CPU of the defaults. Where the bootstrap made one (``broker_cds``), the JVM maps a class-data-sharing
archive of the broker's classes instead of loading and verifying them from the jars: a start costs
about 40 % less CPU, which a loaded machine turns into seconds before the broker listens.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import subprocess  # nosec B404 # StorageTool format with a fixed argument list
import time
from pathlib import Path

from tapeflow.stack.kafka_libs import KafkaSetupError, cds_archive, classpath, java_binary, kafka_version, resolve
from tapeflow.stack.process import StackError, check_port_free, free_port
from tapeflow.stack.service import Launch, Service
from tapeflow_runtime.health import Health
from tapeflow_runtime.kafka_client import broker_health, kafka_protocol_problem

HOST = "127.0.0.1"
NODE_ID = 1

LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      # start, shutdown, log recovery and retention deletions: what an operator looks for
      - name: kafka.server.KafkaRaftServer
        level: INFO
      - name: kafka.server.BrokerServer
        level: INFO
      - name: org.apache.kafka.storage.internals.log.LogLoader
        level: INFO
      - name: kafka.log.LogManager
        level: INFO
      - name: org.apache.kafka.storage.internals.log.UnifiedLog
        level: INFO
      - name: kafka.log.UnifiedLog
        level: INFO
"""


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's ``Uuid``), never
    starting with '-' (Kafka's own generator avoids it too: it would read as a command-line flag)."""
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """The node's configuration: one broker that is its own controller, on loopback."""
    props = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        # one node: every internal topic has one replica
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        # topics come from the catalogue (`tapeflow topics create`, the stack's topics step), never from a typo
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        # retention is checked every minute (Kafka's default is 5): topics are small on one machine
        "log.retention.check.interval.ms": "60000",
        "metadata.max.idle.interval.ms": "60000",
        # a restart after a crash waits for the old registration's session to expire: this timeout
        # (+ ~6 s) is the time to healthy after a SIGKILL; shorter ones risk the node fencing itself
        # when a loaded machine delays its own heartbeats
        "broker.heartbeat.interval.ms": "3000",
        "broker.session.timeout.ms": "9000",
        # each segment preallocates its offset and time indexes at this size (sparse on most file
        # systems, but not on all: 10 MB x 2 x ~100 partitions was 2 GB on an overlay file system);
        # 1 MB still indexes ~500 MB of log per segment
        "log.index.size.max.bytes": str(1 << 20),
        # threads sized for one node on a small machine: each idle request handler, network thread and
        # coordinator event thread wakes several times a second to poll its queue (per thread over 60 s,
        # the broker alone with the catalogue's topics: 1.25 % of a core with 2 network, 4 io and
        # Kafka's 4 group-coordinator threads, 0.90 % with these); two handlers still let a slow
        # request (a ListOffsets by time on a long log) not hold every other client
        "num.network.threads": "1",
        "num.io.threads": "2",
        "background.threads": "2",
        "group.coordinator.threads": "1",
        "group.coordinator.background.threads": "1",
        "share.coordinator.threads": "1",
        "num.recovery.threads.per.data.dir": "2",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


class KafkaBroker(Service):
    name = "broker"

    def __init__(self, settings, paths) -> None:
        super().__init__(settings, paths)
        self.external = settings.broker is not None
        self._ports: tuple[int, int] = (0, 0)
        #: server.properties entries over ours (a test's short retention check, say)
        self.extra_properties: dict[str, str] = {}

    @property
    def kafka_dir(self) -> Path:
        return self.paths.home / "kafka"

    @property
    def data_dir(self) -> Path:
        return self.kafka_dir / "data"

    def external_address(self) -> str | None:
        return self.settings.broker

    def _pick_ports(self) -> tuple[int, int]:
        """The client port (``TAPEFLOW_BROKER_PORT`` or free) and the controller's; a restart keeps
        the ports it had while they are free, so tools a user pointed at the broker go on working."""
        wanted = self.settings.broker_port
        if wanted:
            check_port_free(HOST, wanted, "broker", "TAPEFLOW_BROKER_PORT")
            port = wanted
        else:
            port = _still_free(self._ports[0]) or free_port(HOST)
        self._ports = (port, _still_free(self._ports[1]) or free_port(HOST))
        return self._ports

    def cluster_id(self) -> str:
        """The stack's cluster id, made on first use; checked against the data directory's."""
        path = self.kafka_dir / "cluster.id"
        if path.is_file():
            mine = path.read_text().strip()
        else:
            mine = new_cluster_id()
            path.write_text(mine + "\n")
        formatted = formatted_cluster_id(self.data_dir)
        if formatted is not None and formatted != mine:
            raise StackError(
                f"broker: {self.data_dir} was formatted for Kafka cluster {formatted}, but this home's cluster id "
                f"({path}) is {mine}: restore {path} to {formatted}, or move {self.data_dir} away to start empty"
            )
        return mine

    def prepare(self) -> Launch:
        try:
            java = java_binary()
            libs = resolve(say=lambda m: None)
        except KafkaSetupError as exc:
            raise StackError(f"broker: {exc}") from None
        self.kafka_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster = self.cluster_id()
        port, controller = self._pick_ports()
        config = self.kafka_dir / "server.properties"
        config.write_text(
            server_properties(self.data_dir, port, controller)
            + "".join(f"{k}={v}\n" for k, v in self.extra_properties.items())
        )
        log4j = self.kafka_dir / "log4j2.yaml"
        log4j.write_text(LOG4J2)
        # -XX:-UsePerfData: no hsperfdata file in the system's /tmp, and no sampler thread waking
        # 20 times a second while the broker idles
        jvm = [
            java,
            f"-Xmx{self.settings.broker_heap_mb}m",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:-UsePerfData",
            "-XX:TieredStopAtLevel=1",
            "-XX:MaxDirectMemorySize=256m",
            *_cds_options(java, libs),
            "-Djava.awt.headless=true",
            # IPv4 sockets: the loopback listeners show as 127.0.0.1, not as IPv6-mapped addresses
            "-Djava.net.preferIPv4Stack=true",
            # lz4-java and snappy-java unpack their native libraries into java.io.tmpdir and never
            # remove them: keep them under the broker's own directory, not the system's /tmp
            f"-Djava.io.tmpdir={self._tmp_dir()}",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath(libs),
        ]
        if formatted_cluster_id(self.data_dir) is None:
            self._format(jvm, cluster, config)
        return Launch(argv=[*jvm, "kafka.Kafka", str(config)], address=f"{HOST}:{port}")

    def _tmp_dir(self) -> Path:
        tmp = self.kafka_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def _format(self, jvm: list[str], cluster: str, config: Path) -> None:
        """Kafka's ``StorageTool format``: writes meta.properties and the bootstrap metadata once."""
        t0 = time.monotonic()
        done = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(config)],  # nosec B603 # fixed argument list
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise StackError(f"broker: formatting {self.data_dir} failed: {last[0][:300]}")
        with open(self.paths.log_file("broker"), "a") as log:
            log.write(f"formatted {self.data_dir} for cluster {cluster} in {time.monotonic() - t0:.1f}s\n")

    def health(self, address: str) -> Health:
        if self.external:
            # a port that is not Kafka, or a Kafka too old for what we use, is said as such at `up`
            problem = kafka_protocol_problem(address)
            return Health(False, problem) if problem else broker_health(address)
        health = broker_health(address)
        if not health.ok:
            return health
        free = self.disk_free_bytes()
        low = (
            f"; log disk nearly full ({free / 1e6:.1f} MB free)"
            if free is not None and free < self.restart_free_bytes()
            else ""
        )
        return Health(
            True, f"Apache Kafka {kafka_version()}, {health.detail}, log {log_size_mb(self.data_dir):.1f} MB" + low
        )

    # --- faults ------------------------------------------------------------------------------
    def restart_free_bytes(self) -> int:
        """Free space on the log disk before a broker that died of a full disk is started again: 10 %
        of the filesystem, at most 64 MB (Kafka's start writes checkpoints, snapshots and a fresh
        metadata segment; one that dies at once of the same full disk helps nobody)."""
        try:
            total = shutil.disk_usage(self.data_dir).total
        except OSError:
            return RESTART_FREE_MAX
        return int(min(RESTART_FREE_MAX, total * 0.10))

    def disk_free_bytes(self) -> int | None:
        try:
            return shutil.disk_usage(self.data_dir).free
        except OSError:
            return None

    def hold_restart(self) -> str | None:
        """Why the supervisor must not start the broker now, or None. Only a full log disk holds it:
        Kafka shuts down when its log directory fails on a full disk, and starting it before space is
        back only repeats that (and used to count against the restart limit until the stack gave up)."""
        if self.external:
            return None
        free = self.disk_free_bytes()
        need = self.restart_free_bytes()
        if free is None or free >= need:
            return None
        return (
            f"log disk full ({self.data_dir}, {free / 1e6:.1f} MB free); restarting once {need / 1e6:.1f} MB are free"
        )

    def recovery_detail(self, log_path: Path | str, pid: int) -> str | None:
        """While the running broker (``pid``) has not finished starting, what it is doing, from its log:
        the last log-recovery line (LogLoader / LogManager), or that it is starting; None once Kafka
        logged "Kafka Server started" for this run."""
        return recovery_detail(log_path, pid)


#: most free space `KafkaBroker.restart_free_bytes` asks for
RESTART_FREE_MAX = 64 * 1024 * 1024
#: what Kafka logs when its log directory failed on a full disk (the IOException's message, and its
#: own shutdown line once no log directory is left)
_FULL_DISK = ("No space left on device", "all log dirs in")
_STARTED = "Kafka Server started"
#: the supervisor's marker at each start in the service's log (`Supervisor._start_service`)
_START_MARK = b"\n--- "


def _this_run(log_path: Path | str, tail: int = 1 << 20) -> str:
    """The broker log since its latest start (the supervisor's ``--- <time> starting:`` line), at most
    the last ``tail`` bytes of it."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail))
            data = f.read()
    except OSError:
        return ""
    at = data.rfind(_START_MARK)
    return data[at + 1 if at >= 0 else 0 :].decode(errors="replace")


def died_of_full_disk(log_path: Path | str) -> bool:
    text = _this_run(log_path, tail=256 * 1024)
    return any(marker in text for marker in _FULL_DISK)


_RECOVERY_LINE = re.compile(
    r"\] (?:INFO|WARN) (.*(?:LogLoader|Recover|recover|Loading logs|loaded log|"
    r"Loaded|producer state|snapshot).*?)(?: \([\w.$]+\))?$",
    re.MULTILINE,
)


def recovery_detail(log_path: Path | str, pid: int) -> str | None:
    text = _this_run(log_path)
    if _STARTED in text:
        return None
    lines = _RECOVERY_LINE.findall(text)
    what = lines[-1].strip() if lines else "starting"  # the latest recovery line
    recovering = text.count("Recovering unflushed segment")
    more = f"; {recovering} segment recoveries so far" if recovering else ""
    return f"pid {pid}, not serving yet: {what[:240]}{more}"


def _still_free(port: int) -> int:
    """``port`` when it is set and nobody listens on it, else 0."""
    if not port:
        return 0
    try:
        check_port_free(HOST, port, "broker", "TAPEFLOW_BROKER_PORT")
    except StackError:
        return 0
    return port


def formatted_cluster_id(data_dir: Path) -> str | None:
    meta = data_dir / "meta.properties"
    if not meta.is_file():
        return None
    found = re.search(r"^cluster\.id=(.+)$", meta.read_text(), re.MULTILINE)
    return found.group(1).strip() if found else None


def log_size_mb(data_dir: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512  # indexes are sparse
            except OSError:  # a segment deleted by retention while we walk
                pass
    return total / 1e6


def _cds_options(java: str, libs: Path) -> list[str]:
    """``-XX:SharedArchiveFile`` when the bootstrap made the archive for this JVM and these jars; a JVM
    that finds it unusable says so in its log and loads the classes from the jars, as without it."""
    archive = cds_archive(java, libs)
    return [f"-XX:SharedArchiveFile={archive}"] if archive.is_file() else []
