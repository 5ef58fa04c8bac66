"""The expected-pnl / win-probability model of a watchlist pair: its factors, read from an
``xv.features`` record, and the prediction of a fitted model (the fit is research's:
``backtest.research.watchlist_model``; the file it writes is what a strategy's ``model.file`` names).

Factors (all from the swept spread, the one a hedge can trade, at decision time only):

- the baseline five, the statistics the watchlist plan lists for a spread (the old watchlist's
  regression inputs): ``range_1h`` (max − min over the 1 h window), ``std_1h`` (σ), ``slope`` (3-minute
  least-squares slope per minute), ``crossings_1h`` (mean-crossings per hour), ``drift_1h`` (drift ratio);
- ``spread`` (the swept spread itself), ``z_1h`` (``(spread − mean_1h) / std_1h``) and
  ``funding_8h`` (the funding difference the hedge receives per 8 h).

A factor the record does not have (a stale leg, a window still filling, a funding interval not known)
never silently kills a prediction: with ``missing="impute"`` it takes its training mean and the
prediction lists it in ``imputed`` with the record's reason; more than ``max_imputed`` such factors, or
``missing="skip"``, and the prediction is missing with the reasons (``Prediction.reason``).

Model: factors standardised with the training mean and σ; expected pnl (fraction of notional, net of
four fees and funding at the label's horizon) = ``b0 + x·b`` (ridge); win probability =
``1 / (1 + exp(−(c0 + x·c)))`` (L2 logistic).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tapeflow_runtime.errors import TapeflowError

BASELINE_FACTORS = ("range_1h", "std_1h", "slope", "crossings_1h", "drift_1h")
DEFAULT_FACTORS = ("spread", "z_1h", *BASELINE_FACTORS, "funding_8h")
FORMAT = "tapeflow.watchlist_model.v1"


class ModelFileError(TapeflowError):
    """A model file that cannot be used (the message names the file and why)."""


def _stat(name: str) -> Callable[[Mapping[str, Any]], tuple[float | None, str | None]]:
    def read(record: Mapping[str, Any]) -> tuple[float | None, str | None]:
        value = (record.get("stats") or {}).get(name)
        return (float(value), None) if value is not None else (None, f"{name} not available")

    return read


def _field(name: str) -> Callable[[Mapping[str, Any]], tuple[float | None, str | None]]:
    def read(record: Mapping[str, Any]) -> tuple[float | None, str | None]:
        value = record.get(name)
        if value is None:
            return None, (record.get("missing") or {}).get(name) or f"{name} missing"
        return float(value), None

    return read


def _z(record: Mapping[str, Any]) -> tuple[float | None, str | None]:
    s, why = _field("spread_sweep")(record)
    stats = record.get("stats") or {}
    mean, std = stats.get("sweep_1h_mean"), stats.get("sweep_1h_std")
    if s is None:
        return None, why
    if mean is None or not std:
        return None, "1 h window has no σ yet"
    return (s - mean) / std, None


def _range(record: Mapping[str, Any]) -> tuple[float | None, str | None]:
    stats = record.get("stats") or {}
    low, high = stats.get("sweep_1h_min"), stats.get("sweep_1h_max")
    if low is None or high is None:
        return None, "1 h window empty"
    return high - low, None


FACTORS: dict[str, Callable[[Mapping[str, Any]], tuple[float | None, str | None]]] = {
    "spread": _field("spread_sweep"),
    "z_1h": _z,
    "range_1h": _range,
    "std_1h": _stat("sweep_1h_std"),
    "slope": _field("sweep_slope_per_min"),
    "crossings_1h": _stat("sweep_1h_crossings_per_hour"),
    "drift_1h": _stat("sweep_1h_drift_ratio"),
    "funding_8h": _field("funding_diff_8h"),
}


def factor_values(record: Mapping[str, Any], names: Sequence[str]) -> tuple[list[float | None], dict[str, str]]:
    """The factors of one xv.features record, None where missing, with the reasons of those."""
    values: list[float | None] = []
    reasons: dict[str, str] = {}
    for name in names:
        value, why = FACTORS[name](record)
        if value is not None and not math.isfinite(value):
            value, why = None, f"{name} not finite"
        values.append(value)
        if value is None:
            reasons[name] = why or "missing"
    return values, reasons


@dataclass(frozen=True)
class Prediction:
    expected_pnl: float | None  # fraction of notional, net of fees and funding
    win_prob: float | None
    imputed: dict[str, str] = field(default_factory=dict)  # factor -> why it was missing
    reason: str | None = None  # why there is no prediction

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairModel:
    """A fitted model as stored: factors, standardisation, both sets of coefficients, how it was fitted."""

    factors: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    linear: tuple[float, ...]  # intercept first
    logistic: tuple[float, ...]  # intercept first
    horizon_ms: int
    fees: float  # the four fees the labels were net of
    fit: Mapping[str, Any] = field(default_factory=dict)  # alphas, split, sizes, out-of-sample scores

    def __post_init__(self) -> None:
        n = len(self.factors)
        unknown = [f for f in self.factors if f not in FACTORS]
        if unknown:
            raise ValueError(f"unknown factors {unknown}; known: {sorted(FACTORS)}")
        if not (len(self.means) == len(self.scales) == n and len(self.linear) == len(self.logistic) == n + 1):
            raise ValueError("means, scales and coefficients must match the factors")

    def predict(self, record: Mapping[str, Any], missing: str = "impute", max_imputed: int = 2) -> Prediction:
        values, reasons = factor_values(record, self.factors)
        if reasons and (missing != "impute" or len(reasons) > max_imputed):
            text = "; ".join(f"{k}: {v}" for k, v in reasons.items())
            return Prediction(None, None, {}, f"missing factor(s) {text}")
        x = [0.0 if v is None else (v - m) / s for v, m, s in zip(values, self.means, self.scales)]
        pnl = self.linear[0] + math.fsum(c * xi for c, xi in zip(self.linear[1:], x))
        z = self.logistic[0] + math.fsum(c * xi for c, xi in zip(self.logistic[1:], x))
        prob = 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))
        return Prediction(pnl, prob, reasons)

    def to_json(self) -> str:
        data = {"format": FORMAT, **asdict(self)}
        return json.dumps(data, indent=2, sort_keys=True)

    def save(self, path: str | Path) -> str:
        """Write the model; returns the sha256 of the bytes written (what a strategy's hash includes)."""
        text = self.to_json() + "\n"
        Path(path).write_text(text, encoding="utf-8")
        return hashlib.sha256(text.encode()).hexdigest()


def load_model(path: str | Path) -> PairModel:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path}: not a model file: {error}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: not a model file: format must be {FORMAT!r} (write one with `tapeflow watchlist fit`)"
        )
    try:
        return PairModel(
            tuple(data["factors"]),
            tuple(data["means"]),
            tuple(data["scales"]),
            tuple(data["linear"]),
            tuple(data["logistic"]),
            int(data["horizon_ms"]),
            float(data["fees"]),
            data.get("fit", {}),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: bad model file: {error}") from None
