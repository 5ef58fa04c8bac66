"""The confidence model's part in one decision, for the trade autopsy's narrative
(``review.autopsy_db.Explainer``).

A model took part when the revision that made the signal (its ``config_rev`` in ``strategy_revisions``;
for an unregistered revision, 0 or NULL, the strategy file the process runs) names one
(``model: {file, sha256}``). The answer: the model's p (the signal's own ``p_win`` when the signals row
carries it, else the model file on the stored feature row), its learner and file digest, and the
``top`` features with the largest exact SHAP contributions (in log-odds of the raw model, before
calibration; ``LogisticFit.contributions`` and LightGBM's tree SHAP, the code ``model train`` reports
with). A model file that cannot be read is logged and the autopsy goes on without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from .model_health import ModelCache, ModelHealthError, direction_sign, feature_vector, model_ref

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger("autopsy")
TOP = 3


def contributions(model: Any, x: np.ndarray, sign: float, top: int = TOP) -> tuple[list[dict[str, Any]], float]:
    """The ``top`` features by |SHAP| of one row (largest first, ties by name) and the base value."""
    phi, base = model.fit.contributions(x[None, :], np.asarray([sign]))
    row = phi[0]
    order = sorted(range(len(row)), key=lambda j: (-abs(float(row[j])), model.features[j]))[:top]
    out = [
        {
            "feature": model.features[j],
            "value": None if math.isnan(float(x[j])) else float(x[j]),
            "shap": float(row[j]),
        }
        for j in order
    ]
    return out, float(base)


@dataclass
class TradeExplainer:
    """``review.autopsy_db.Explainer`` over model files (module docstring)."""

    files: Callable[[], Mapping[str, Path]] = dict
    cache: ModelCache = field(default_factory=ModelCache)
    top: int = TOP

    def _content(self, conn: psycopg.Connection, strategy: str, rev: int | None) -> str | None:
        if rev:
            with conn.cursor() as cur:
                cur.execute("SELECT content FROM strategy_revisions WHERE name = %s AND rev = %s", (strategy, rev))
                row = cur.fetchone()
            return None if row is None else str(row[0])
        path = self.files().get(strategy)
        return path.read_text(encoding="utf-8") if path is not None and path.is_file() else None

    def __call__(self, conn: psycopg.Connection, decision: Mapping[str, Any]) -> dict[str, Any] | None:
        strategy = str(decision["strategy"])
        try:
            content = self._content(conn, strategy, decision.get("config_rev"))
            ref = model_ref(content)
            if ref is None:
                return None
            loaded = self.cache.load(ref)
        except (ModelHealthError, OSError) as exc:
            log.warning("autopsy without the model's part", strategy=strategy, error=str(exc))
            return None
        model = loaded.model
        x = feature_vector(
            model.features,
            decision.get("inputs"),
            decision.get("layer_scores"),
            decision.get("score"),
            decision.get("direction"),
        )
        sign = direction_sign(decision.get("direction"))
        stored = _stored_p_win(conn, str(decision.get("signal_id") or ""))
        p = stored if stored is not None else float(model.predict(x[None, :], np.asarray([sign]))[0])
        top, base_value = contributions(model, x, sign, self.top)
        return {
            "learner": model.learner,
            "model_sha256": loaded.sha256,
            "p_win": p,
            "p_source": "signal" if stored is not None else "model file",
            "base": base_value,
            "contributions": top,
        }


def _stored_p_win(conn: psycopg.Connection, signal_id: str) -> float | None:
    """The signals row's ``p_win`` when the column exists and is set."""
    from .model_health import signals_have_p_win

    if not signal_id or not signals_have_p_win(conn):
        return None
    with conn.cursor() as cur:
        cur.execute("SELECT p_win FROM signals WHERE signal_id = %s", (signal_id,))
        row = cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])
