"""Microstructure detectors of the engine core: VPIN, Kyle's lambda, Amihud illiquidity (issue 25),
the flow detectors: CVD–price divergence, open-interest spikes, liquidation clusters and cascades,
and the book detectors: order-book walls (pulled or filled) and iceberg refills.

Incremental (trade by trade, compiled where hot), deterministic whatever the batching, bounded
memory per symbol, plain-data state: the same rules as the rest of ``stream_apps.core`` so the live
worker and the backtest compute them alike. See ``microstructure``, ``flow`` and ``book`` for the
definitions.
"""

from .book import BOOK_FIELDS, BookDetectors, BookParams
from .flow import FLOW_FIELDS, FlowDetectors, FlowParams
from .microstructure import DetectorLog, DetectorParams, MicrostructureDetectors
from .microstructure import DETECTOR_FIELDS as MICROSTRUCTURE_FIELDS

DETECTOR_FIELDS = MICROSTRUCTURE_FIELDS + FLOW_FIELDS + BOOK_FIELDS  # every feature a ``detectors`` section may add

__all__ = ["BOOK_FIELDS", "DETECTOR_FIELDS", "FLOW_FIELDS", "MICROSTRUCTURE_FIELDS", "BookDetectors", "BookParams",
           "DetectorLog", "DetectorParams", "FlowDetectors", "FlowParams", "MicrostructureDetectors"]
