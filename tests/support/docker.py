"""Whether the real-component fixtures run in Docker (Kafka, TimescaleDB) or embedded (Apache Kafka, PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import subprocess


def docker_available() -> bool:
    if os.environ.get("TAPEFLOW_TEST_NO_DOCKER") or not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


USE_DOCKER = docker_available()  # Kafka and TimescaleDB in containers; otherwise the embedded ones
