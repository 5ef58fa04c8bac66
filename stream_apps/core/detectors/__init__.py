"""Microstructure detectors of the engine core: VPIN, Kyle's lambda, Amihud illiquidity (issue 25),
and the flow detectors: CVD–price divergence, open-interest spikes, liquidation clusters and cascades.

Incremental (trade by trade, compiled where hot), deterministic whatever the batching, bounded
memory per symbol, plain-data state: the same rules as the rest of ``stream_apps.core`` so the live
worker and the backtest compute them alike. See ``microstructure`` and ``flow`` for the definitions.
"""

from .flow import FLOW_FIELDS, FlowDetectors, FlowParams
from .microstructure import DetectorLog, DetectorParams, MicrostructureDetectors
from .microstructure import DETECTOR_FIELDS as MICROSTRUCTURE_FIELDS

DETECTOR_FIELDS = MICROSTRUCTURE_FIELDS + FLOW_FIELDS  # every feature a ``detectors`` section may add

__all__ = ["DETECTOR_FIELDS", "FLOW_FIELDS", "MICROSTRUCTURE_FIELDS", "DetectorLog", "DetectorParams", "FlowDetectors",
           "FlowParams", "MicrostructureDetectors"]
