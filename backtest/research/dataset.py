"""Feature records and their labels as one columnar research table: Parquet files and PostgreSQL rows.

Why columns: a month of four symbols and three strategies is about ten million evaluations; the engine
already keeps them as columns (``FeatureTable``), so the research table is built from those arrays
without a dict per row, labelled with ``labels``, and written with pyarrow (Parquet, the format
pandas, polars, DuckDB and Spark read) or COPYed into ``feature_labels`` beside ``features`` (same
``evaluation_id``/``eval_time`` key, so the two join).

Columns: identity (``evaluation_id``, strategy, version, config hash, exchange, symbol, ``eval_time``
ms UTC), decision (direction, score, raw score, gate, block reason, one ``layer_<name>`` per layer,
NaN where the strategy does not use it), every input of the feature record (``in_<name>``, NaN where
missing: ``evaluation_columns``, which ``tapeflow research export`` writes too) and the labels
(``y_binary_60m``, ``fwd_return_5m/15m/60m``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from stream_apps.core.detectors import DETECTOR_FIELDS
from stream_apps.core.frame import SCALAR_FIELDS, duration_name
from stream_apps.core.records import FeatureBlock, FeatureTable
from stream_apps.core.scoring import BLOCK_REASONS, DIRECTIONS, GATES, LAYER_ORDER, strategy_input_columns

from .labels import PricePath, label_columns

LABELS = ("y_binary_60m", "fwd_return_5m", "fwd_return_15m", "fwd_return_60m")


def evaluation_columns(block: FeatureBlock) -> dict[str, np.ndarray]:
    """One engine block (one strategy on one symbol's evaluations) as columns: identity, decision,
    ``layer_<name>`` per layer (NaN: not a layer of the strategy) and ``in_<name>`` for every input of
    its feature records, in their order (the snapshot's fields, CVD windows, ``atr_price_ratio``, the
    strategy's own inputs; NaN = missing). The engine's arrays, not copies."""
    frame, cfg, scores = block.frame, block.strategy, block.scores
    n = len(frame)
    times = frame.time_ms
    columns: dict[str, np.ndarray] = {
        "evaluation_id": np.array(
            [f"{cfg.name}:{cfg.config_hash}:{frame.exchange}:{frame.symbol}:{t}" for t in times.tolist()], dtype=object
        ),
        "strategy": np.full(n, cfg.name, dtype=object),
        "strategy_version": np.full(n, cfg.version, dtype=object),
        "config_hash": np.full(n, cfg.config_hash, dtype=object),
        "exchange": np.full(n, frame.exchange, dtype=object),
        "symbol": np.full(n, frame.symbol, dtype=object),
        "eval_time": times,
        "direction": np.array([DIRECTIONS[s] for s in scores.sign.tolist()], dtype=object),
        "score": scores.score,
        "raw_score": scores.raw_score,
        "gate": np.array([GATES[g - 1] if g else None for g in scores.gate.tolist()], dtype=object),
        "block_reason": np.array([BLOCK_REASONS[b] for b in block.block.tolist()], dtype=object),
    }
    for name in LAYER_ORDER:
        columns[f"layer_{name}"] = scores.layers[name] if name in scores.layers else np.full(n, np.nan)
    for name in SCALAR_FIELDS:
        columns[f"in_{name}"] = frame.values[name]
    for prefix, pairs in (("cvd", frame.cvd), ("cvd_slope", frame.cvd_slope), ("cvd_accel", frame.cvd_accel)):
        for window, column in pairs.items():
            columns[f"in_{prefix}_{duration_name(window)}"] = column
    columns["in_atr_price_ratio"] = frame.atr_price_ratio
    for name, column in strategy_input_columns(frame, cfg):
        columns[f"in_{name}"] = column
    return columns


class ResearchTable:
    """Columns of labelled evaluations, appended block by block (one strategy on one symbol's rows)."""

    def __init__(self) -> None:
        self._parts: list[dict[str, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(p["eval_time"]) for p in self._parts)

    def add_tables(self, tables: Iterable[FeatureTable], paths: dict[tuple[str, str], PricePath]) -> None:
        for table in tables:
            for block in table.blocks:
                self.add_block(block, paths[(block.frame.exchange, block.frame.symbol)])

    def add_block(self, block: FeatureBlock, path: PricePath) -> None:
        columns = evaluation_columns(block)
        for name in DETECTOR_FIELDS:
            if f"in_{name}" in columns and np.isnan(columns[f"in_{name}"]).all():
                del columns[f"in_{name}"]  # detectors off (or not yet filled): no column, as before they existed
        columns.update(
            label_columns(
                columns["eval_time"],
                columns["in_last_price"],
                columns["in_atr"],
                block.scores.sign.astype(np.int64),
                path,
            )
        )
        self._parts.append(columns)

    def columns(self) -> dict[str, np.ndarray]:
        """Every column over every block (blocks with other windows get NaN in the columns they lack)."""
        names: list[str] = []
        for part in self._parts:
            names += [name for name in part if name not in names]
        out = {}
        for name in names:
            pieces = []
            for part in self._parts:
                n = len(part["eval_time"])
                pieces.append(part[name] if name in part else np.full(n, np.nan))
            out[name] = np.concatenate(pieces) if pieces else np.empty(0)
        return out

    def to_arrow(self) -> pa.Table:
        arrays = {}
        for name, column in self.columns().items():
            if name == "eval_time":
                arrays[name] = pa.array(column, type=pa.timestamp("ms", tz="UTC"))
            elif column.dtype == object:
                arrays[name] = pa.array(column.tolist(), type=pa.string())
            elif name == "y_binary_60m":
                arrays[name] = pa.array(column, type=pa.float64(), from_pandas=True).cast(pa.int8())
            else:
                arrays[name] = pa.array(column, from_pandas=True)  # NaN -> null
        return pa.table(arrays)

    def write_parquet(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.to_arrow(), path, compression="zstd")
        return path

    # -- PostgreSQL ----------------------------------------------------------------------------------
    def store(self, conninfo: str) -> int:
        """Upsert the labels into ``feature_labels`` (migration 0010): COPY into a temporary table, then
        insert, replacing labels computed before for the same evaluation. Returns rows written."""
        c = self.columns()
        if not len(self):
            return 0
        fields = (
            "evaluation_id",
            "eval_time",
            "strategy",
            "config_hash",
            "exchange",
            "symbol",
            "direction",
            "in_last_price",
            "in_atr",
            *LABELS,
        )
        with psycopg.connect(conninfo) as conn:
            conn.execute("CREATE TEMP TABLE labels_in (LIKE feature_labels INCLUDING DEFAULTS) ON COMMIT DROP")
            with conn.cursor().copy(
                "COPY labels_in (evaluation_id, eval_time, strategy, config_hash, exchange, symbol, direction, "
                "entry_price, atr, y_binary_60m, fwd_return_5m, fwd_return_15m, fwd_return_60m) FROM STDIN"
            ) as copy:
                for row in zip(*(c[f].tolist() for f in fields)):
                    values = list(row)
                    values[1] = _timestamp(values[1])
                    for k in range(7, len(values)):
                        if values[k] != values[k]:  # NaN -> NULL
                            values[k] = None
                    if values[9] is not None:
                        values[9] = int(values[9])
                    copy.write_row(values)
            cursor = conn.execute(
                "INSERT INTO feature_labels SELECT * FROM labels_in "
                "ON CONFLICT (evaluation_id, eval_time) DO UPDATE SET "
                "y_binary_60m = EXCLUDED.y_binary_60m, fwd_return_5m = EXCLUDED.fwd_return_5m, "
                "fwd_return_15m = EXCLUDED.fwd_return_15m, fwd_return_60m = EXCLUDED.fwd_return_60m, "
                "entry_price = EXCLUDED.entry_price, atr = EXCLUDED.atr"
            )
            return cursor.rowcount


def _timestamp(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
