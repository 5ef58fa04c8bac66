"""The confidence model's dataset: the engine's feature snapshot at every evaluation with its label.

Rows come from the training export (``tapeflow research export``: ``<root>/<strategy>/date=*/<SYMBOL>.parquet``,
one row per evaluation, its features as ``in_*``, its decision and its labels); ``tapeflow model train``
writes that export itself for the strategy with every microstructure detector turned on
(``with_detectors``), since no shipped strategy runs them and the question is whether they add anything.

- Rows: evaluations with a direction whose target is known (``rows="all"``), or only those that were
  signals (``rows="signals"``: no block reason); optionally one per symbol and interval (``every_ms``:
  evaluations a second apart share almost all of their label window and features). The target is a column of 0/1 (default
  ``y_binary_60m``, the barrier label); each row's label interval is ``[eval_time, eval_time + horizon]``,
  what purged cross-validation needs.
- Features: the decision's numbers (``score``, ``raw_score``, ``layer_*``), every ``in_*`` input, and
  ``direction_sign`` (+1 long, -1 short), less what cannot generalise across time and symbols: times
  (``*_ms``), price levels in quote currency (``last_price``, ``mark_price``, ``index_price``, ``atr``:
  ``atr_price_ratio`` carries the ATR), the open interest level (``oi_change`` carries it) and the engine's
  warm-up counts (``atr_bars``, ``qty_samples``). A column with no value or one value in the whole window
  is dropped (and listed). Missing values stay NaN: LightGBM learns where they go, the logistic
  regression imputes the training mean.
- ``detector_features``: the columns the detectors add (``stream_apps.core.detectors.DETECTOR_FIELDS``),
  which the model is also fitted without, to report what they add.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from stream_apps.core.detectors import DETECTOR_FIELDS
from stream_apps.core.strategy import (
    Cascade,
    Detectors,
    Divergence,
    Icebergs,
    Liquidations,
    OiSpike,
    StrategyConfig,
    Walls,
)

DEFAULT_TARGET = "y_binary_60m"
SIGN_FEATURE = "direction_sign"
# levels that drift with the market or with the engine's warm-up rather than describe the moment: a model
# fitted on one period would read them as the period itself (prices, ATR and open interest in their units;
# the counts of bars and trades the ATR and size quantiles have seen). Ratios and changes carry them.
EXCLUDED_INPUTS = (
    "in_last_price",
    "in_mark_price",
    "in_index_price",
    "in_atr",
    "in_open_interest",
    "in_atr_bars",
    "in_qty_samples",
)
DETECTOR_COLUMNS = frozenset(f"in_{name}" for name in DETECTOR_FIELDS)
ROW_CHOICES = ("all", "signals")


class ModelDataError(ValueError):
    """A dataset that cannot be built as asked (one line: the CLI shows it as ``error: ...``)."""


def with_detectors(cfg: StrategyConfig) -> StrategyConfig:
    """``cfg`` with every detector on (VPIN, Kyle's lambda, Amihud, divergence, OI spikes, liquidations,
    walls, icebergs; defaults where the strategy has no section). Scores and decisions do not read a
    detector unless a gate or regime names it, so the evaluations stay the strategy's own."""
    current = cfg.detectors or Detectors()
    full = current.model_copy(
        update={
            "divergence": current.divergence or Divergence(),
            "oi_spike": current.oi_spike or OiSpike(),
            "liquidations": current.liquidations or Liquidations(cascade=Cascade()),
            "walls": current.walls or Walls(),
            "icebergs": current.icebergs or Icebergs(),
        }
    )
    data = cfg.model_dump(mode="json")
    data["detectors"] = full.model_dump(mode="json")
    return type(cfg).model_validate(data)


@dataclass
class Dataset:
    """Rows in time order: features (float64, NaN = missing), 0/1 target, label intervals, identity."""

    x: np.ndarray
    y: np.ndarray
    t0: np.ndarray  # eval_time, ms
    t1: np.ndarray  # eval_time + horizon, ms
    sign: np.ndarray  # +1 long, -1 short
    symbols: np.ndarray
    features: list[str]
    target: str
    horizon_ms: int
    dropped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def detector_features(self) -> list[str]:
        return [name for name in self.features if name in DETECTOR_COLUMNS]

    def without(self, names: list[str]) -> Dataset:
        """The same rows without the feature columns ``names``."""
        keep = [i for i, name in enumerate(self.features) if name not in names]
        return Dataset(
            self.x[:, keep],
            self.y,
            self.t0,
            self.t1,
            self.sign,
            self.symbols,
            [self.features[i] for i in keep],
            self.target,
            self.horizon_ms,
            self.dropped,
        )

    def digest(self) -> str:
        """SHA-256 of the training data: feature names, every value, targets and times (the model file
        names the data it was fitted on)."""
        h = hashlib.sha256()
        h.update("\n".join([self.target, str(self.horizon_ms), *self.features]).encode())
        for array in (self.x, self.y, self.t0, self.t1, self.sign):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()


def feature_columns(names: list[str]) -> list[str]:
    """The model's candidate features among a table's columns, in the table's order."""
    out = []
    for name in names:
        if name in ("score", "raw_score") or name.startswith("layer_"):
            out.append(name)
        elif name.startswith("in_") and not name.endswith("_ms") and name not in EXCLUDED_INPUTS:
            out.append(name)
    return out


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def from_table(table: pa.Table, target: str, horizon_ms: int, rows: str = "all", every_ms: int = 1000) -> Dataset:
    """The dataset of an export's rows (any order; see the module docstring), keeping the first row of each
    symbol in each ``every_ms`` interval (the engine evaluates at most once a second: 1000 keeps all)."""
    if rows not in ROW_CHOICES:
        raise ModelDataError(f"--rows {rows!r}: use one of {', '.join(ROW_CHOICES)}")
    if target not in table.column_names:
        labels = [c for c in table.column_names if c.startswith(("y_", "fwd_"))]
        raise ModelDataError(f"--target {target!r}: no such column (the data has {', '.join(labels) or 'no labels'})")
    y_all = _column(table, target)
    direction = table.column("direction")
    sign = _is(direction, "LONG").astype(np.float64) - _is(direction, "SHORT").astype(np.float64)
    keep = ~np.isnan(y_all) & (sign != 0)
    if rows == "signals":
        keep &= np.asarray(pc.is_null(table.column("block_reason")).to_numpy(zero_copy_only=False), dtype=bool)
    values = np.unique(y_all[keep])
    if len(values) and not np.isin(values, (0.0, 1.0)).all():
        raise ModelDataError(f"--target {target!r} is not a 0/1 label (values such as {values[:3].tolist()})")
    index = np.flatnonzero(keep)
    t0 = np.asarray(table.column("eval_time").cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    index = index[np.argsort(t0[index], kind="stable")]
    encoded = table.column("symbol").combine_chunks().dictionary_encode()
    code = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    if every_ms > 1000:
        _keys, first = np.unique(np.column_stack([code[index], t0[index] // every_ms]), axis=0, return_index=True)
        index = index[np.sort(first)]
    names = feature_columns(table.column_names)
    x = np.empty((len(index), len(names) + 1), dtype=np.float64)
    for j, name in enumerate(names):
        x[:, j] = _column(table, name)[index]
    x[:, -1] = sign[index]
    features = [*names, SIGN_FEATURE]
    usable = [j for j in range(x.shape[1]) if _varies(x[:, j])]
    dropped = [features[j] for j in range(len(features)) if j not in usable]
    symbols = np.asarray(encoded.dictionary.to_pylist(), dtype=object)[code[index]]
    return Dataset(
        np.ascontiguousarray(x[:, usable]),
        y_all[index].astype(np.int8),
        t0[index],
        t0[index] + horizon_ms,
        sign[index],
        symbols,
        [features[j] for j in usable],
        target,
        horizon_ms,
        dropped,
    )


def _is(column: pa.ChunkedArray, value: str) -> np.ndarray:
    """Where a text column equals ``value`` (null: False)."""
    return np.asarray(pc.fill_null(pc.equal(column, value), False).to_numpy(zero_copy_only=False), dtype=bool)


def _varies(column: np.ndarray) -> bool:
    present = column[~np.isnan(column)]
    return len(present) > 0 and bool(present.min() != present.max())


def read_export(root: Path, from_ms: int, to_ms: int, symbols: list[str] | None = None) -> pa.Table:
    """The rows of an export folder (``<out>/<strategy>``) with ``eval_time`` in ``[from_ms, to_ms)``."""
    if not root.is_dir():
        raise ModelDataError(f"{root}: no export there (tapeflow research export writes one)")
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    start = pa.scalar(datetime.fromtimestamp(from_ms / 1000, tz=UTC), type=pa.timestamp("ms", tz="UTC"))
    end = pa.scalar(datetime.fromtimestamp(to_ms / 1000, tz=UTC), type=pa.timestamp("ms", tz="UTC"))
    condition = (ds.field("eval_time") >= start) & (ds.field("eval_time") < end)
    if symbols:
        condition &= ds.field("symbol").isin(symbols)
    table = dataset.to_table(filter=condition)
    return table.drop_columns([c for c in ("date",) if c in table.column_names])


def horizon_of(target: str) -> int | None:
    """The label window a target's name says (``..._60m`` = one hour, ``_15m``, ``_5m``), or None."""
    for suffix, ms in (("_60m", 3_600_000), ("_15m", 900_000), ("_5m", 300_000), ("_1h", 3_600_000)):
        if target.endswith(suffix):
            return ms
    return None
