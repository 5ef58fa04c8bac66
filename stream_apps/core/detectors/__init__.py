"""Microstructure detectors of the engine core: VPIN, Kyle's lambda, Amihud illiquidity (issue 25).

Incremental (trade by trade, compiled where hot), deterministic whatever the batching, bounded
memory per symbol, plain-data state: the same rules as the rest of ``stream_apps.core`` so the live
worker and the backtest compute them alike. See ``microstructure`` for the definitions.
"""

from .microstructure import DETECTOR_FIELDS, DetectorLog, DetectorParams, MicrostructureDetectors

__all__ = ["DETECTOR_FIELDS", "DetectorLog", "DetectorParams", "MicrostructureDetectors"]
