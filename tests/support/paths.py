"""Where the repository and the bundled test data are, for tests at any depth of the tree."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = REPO / "tests" / "data"
RECORDING = DATA_DIR / "binance_futures_ws"
