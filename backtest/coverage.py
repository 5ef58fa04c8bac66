"""A run's coverage: for every layer a strategy uses (weight > 0) and every gate it configures, per
symbol, how many of its evaluations had the input present, and how many evaluations each block
reason stopped. Counted from the engine's columnar feature tables (no dict per record)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from backtest.model import CoverageRow
from stream_apps.core.records import FeatureTable
from stream_apps.core.scoring import BLOCK_REASONS
from stream_apps.core.strategy import StrategyConfig

# layer -> inputs (feature ``inputs`` names) whose presence the layer needs; "trades" and
# "liquidations" are special: trades are what every evaluation is made of, liquidations are sums
# that read 0 without data, so they are present when the source delivers them at all
LAYER_INPUTS: Mapping[str, tuple[str, ...]] = {
    "direction": ("trades",),
    "crowding": ("long_short_ratio", "top_trader_long_share"),
    "environment": ("oi_change",),
    "confirmation": ("vwap_30m",),
    "auxiliary": ("coinbase_premium",),
    "funding": ("funding_rate",),
    "liquidation": ("liquidations",),
}
GATE_INPUTS: Mapping[str, str] = {
    "min_atr_price": "atr_price_ratio",
    "obi_against": "obi",
    "spot_perp_divergence": "spot_perp_divergence",
    "whale_against": "whale_ratio_15m",
}


def layers_in_use(strategies: Sequence[StrategyConfig]) -> dict[str, list[tuple[str, str]]]:
    """strategy -> [(layer or gate, input)] it depends on."""
    use: dict[str, list[tuple[str, str]]] = {}
    for cfg in strategies:
        pairs = [
            (layer, name) for layer, names in LAYER_INPUTS.items() if getattr(cfg.weights, layer) > 0 for name in names
        ]
        pairs += [(f"gate:{gate}", name) for gate, name in GATE_INPUTS.items() if getattr(cfg.gates, gate) is not None]
        use[cfg.name] = pairs
    return use


class Coverage:
    """Evaluations and present inputs per (layer or gate, symbol, input), and blocked evaluations per
    ``strategy:reason``."""

    def __init__(self, strategies: Sequence[StrategyConfig]) -> None:
        self.counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        self.blocked: Counter[str] = Counter()
        self.layer_use = layers_in_use(strategies)

    def count(self, tables: list[FeatureTable], has_liquidations: bool) -> None:
        """An input is present in a record when its column is not NaN there (the records' ``inputs``
        map leaves out exactly those); liquidations are present when the source has them at all."""
        counts, blocked = self.counts, self.blocked
        for table in tables:
            for block in table.blocks:
                name_of, symbol, n = block.strategy.name, block.frame.symbol, len(block)
                reasons = np.bincount(block.block, minlength=len(BLOCK_REASONS))
                for code in np.flatnonzero(reasons[1:]) + 1:
                    blocked[f"{name_of}:{BLOCK_REASONS[code]}"] += int(reasons[code])
                for layer, name in self.layer_use[name_of]:
                    row = counts[(layer, symbol, name)]
                    row[0] += n
                    if name == "trades" or (name == "liquidations" and has_liquidations):
                        row[1] += n
                    else:
                        column = (
                            block.frame.atr_price_ratio if name == "atr_price_ratio" else block.frame.values.get(name)
                        )
                        row[1] += int(np.count_nonzero(~np.isnan(column))) if column is not None else 0

    def rows(self, notes: Mapping[str, str]) -> list[CoverageRow]:
        return [
            CoverageRow(layer, symbol, name, evaluations, present, notes.get(name, ""))
            for (layer, symbol, name), (evaluations, present) in sorted(self.counts.items())
        ]
