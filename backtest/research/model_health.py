"""Confidence-model health: is a strategy's model p = P(win | features) still right about its trades?

**The measure** (``rolling_health``, pure): over the strategy's last ``window`` (100) labelled trades, the
AUC of the model's p against the outcome and its Brier score (mean squared error of p), with log loss
beside. The outcome of a trade is 1 when its outcome label (``outcome_labels``, written by the stack's
labels service) at the label horizon (``horizon_h``, default 12 h, the shortest of the label horizons:
the soonest a trade's outcome is known) is ``pos`` (net ROI at or above the strategy's threshold), 0
when it is ``neg`` or ``neutral``.

**The verdict** (``HealthThresholds``): ``unhealthy`` when AUC < 0.55 or Brier > 0.25 (defaults; 0.25 is
the Brier score of a constant p = 0.5, a model worse than knowing nothing); ``insufficient`` (not
judged) below ``min_samples`` (30) trades or with one outcome only; else ``healthy``. An unhealthy model
cannot be promoted (`tapeflow strategy promote`) and a canary running one is rolled back by the guardrail
controller (``tapeflow.rollout_guard``).

**Where p comes from**: the signal's own ``p_win`` when its signals row has one and the revision that made
it ran this very model (same SHA-256); otherwise the model file applied (``LoadedModel.predict``, the
model's own prediction code) to the signal's evaluation in ``features``, rebuilt into the model's feature
order exactly as ``model_data`` builds the training rows: ``score``, ``raw_score`` (the sum of the layer
points before gates, which ``features`` does not store as a column), ``layer_<name>`` from
``layer_scores``, ``in_<name>`` from ``inputs``, ``direction_sign`` from the direction; a value the row
lacks is missing (NaN), as in training.

**Which model**: a strategy revision names its model in its file (``model: {file, sha256}``); the file is
read (an absolute path, or relative to the working directory, as the engine reads it), its SHA-256
checked and it is loaded once per content (``ModelCache``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .model import metrics
from .model_data import SIGN_FEATURE

if TYPE_CHECKING:
    import psycopg

    from .model_train import LoadedModel

WINDOW_TRADES = 100
DEFAULT_HORIZON_H = 12
LIVE_SOURCES = ("paper", "live")
STATUSES = ("healthy", "unhealthy", "insufficient")


class ModelHealthError(ValueError):
    """A model that cannot be judged as asked (one line for the operator)."""


@dataclass(frozen=True)
class HealthThresholds:
    """When a model is unhealthy, and over what it is judged (module docstring)."""

    min_auc: float = 0.55
    max_brier: float = 0.25
    min_samples: int = 30
    window: int = WINDOW_TRADES
    horizon_h: int = DEFAULT_HORIZON_H

    def __post_init__(self) -> None:
        if not 0 <= self.min_auc <= 1:
            raise ModelHealthError(f"minimum AUC must be in [0, 1], got {self.min_auc:g}")
        if not 0 < self.max_brier <= 1:
            raise ModelHealthError(f"maximum Brier score must be in (0, 1], got {self.max_brier:g}")
        if self.window < 1 or self.min_samples < 1:
            raise ModelHealthError("the window and the minimum sample count must be at least 1")
        if self.min_samples > self.window:
            raise ModelHealthError(f"minimum samples {self.min_samples} exceed the window of {self.window} trades")
        if self.horizon_h < 1:
            raise ModelHealthError(f"label horizon must be at least 1 h, got {self.horizon_h}")


@dataclass(frozen=True)
class Health:
    samples: int
    positives: int
    auc: float | None
    brier: float | None
    log_loss: float | None
    status: str
    reason: str

    @property
    def unhealthy(self) -> bool:
        return self.status == "unhealthy"

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "positives": self.positives,
            "auc": self.auc,
            "brier": self.brier,
            "log_loss": self.log_loss,
            "status": self.status,
            "reason": self.reason,
        }


def rolling_health(y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray, t: HealthThresholds) -> Health:
    """AUC, Brier score and log loss of ``p`` against 0/1 outcomes ``y`` (both in time order, oldest
    first) over the last ``t.window`` of them, and the verdict."""
    y_all, p_all = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if y_all.shape != p_all.shape:
        raise ModelHealthError(f"{len(y_all)} outcomes but {len(p_all)} predictions")
    y_w, p_w = y_all[-t.window :], p_all[-t.window :]
    n = len(y_w)
    if n == 0:
        return Health(0, 0, None, None, None, "insufficient", "no labelled trades")
    m = metrics(y_w, p_w)
    auc = None if m["auc"] is None else float(m["auc"])
    brier, loss = float(m["brier"] or 0.0), float(m["log_loss"] or 0.0)

    def verdict(status: str, reason: str) -> Health:
        return Health(n, int(y_w.sum()), auc, brier, loss, status, reason)

    if n < t.min_samples:
        return verdict("insufficient", f"{n} labelled trades < {t.min_samples} needed to judge")
    if auc is None:
        return verdict("insufficient", f"one outcome only over {n} trades: no AUC")
    breaches = []
    if auc < t.min_auc:
        breaches.append(f"AUC {auc:.3f} < {t.min_auc:g}")
    if brier > t.max_brier:
        breaches.append(f"Brier {brier:.4f} > {t.max_brier:g}")
    if breaches:
        return verdict("unhealthy", f"{' and '.join(breaches)} over the last {n} trades")
    return verdict("healthy", f"AUC {auc:.3f}, Brier {brier:.4f} over the last {n} trades")


# -- the model a revision names ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A strategy file's ``model: {file, sha256}``."""

    file: str
    sha256: str | None = None

    def path(self) -> Path:
        """An absolute path, or relative to the working directory, as the engine reads it
        (``stream_apps.core.confidence.resolve``)."""
        return Path(self.file).expanduser()


def model_ref(content: str | Mapping[str, Any] | None) -> ModelRef | None:
    """The model a strategy file's text (or its parsed mapping) names, or None (no ``model`` key)."""
    import yaml

    if content is None:
        return None
    try:
        data = yaml.safe_load(content) if isinstance(content, str) else content
    except yaml.YAMLError as exc:
        raise ModelHealthError(f"the strategy file does not parse: {str(exc).splitlines()[0]}") from None
    section = data.get("model") if isinstance(data, Mapping) else None
    if not section:
        return None
    if isinstance(section, str):
        return ModelRef(section)
    if not isinstance(section, Mapping) or not section.get("file"):
        raise ModelHealthError("the strategy's model section needs a file")
    sha = section.get("sha256")
    return ModelRef(str(section["file"]), str(sha) if sha else None)


def file_digests(text: bytes) -> set[str]:
    """SHA-256 of a model file as written and of its text without the final newline (the digest
    ``save_model`` names the file by): a revision may record either."""
    return {hashlib.sha256(text).hexdigest(), hashlib.sha256(text.rstrip(b"\n")).hexdigest()}


@dataclass(frozen=True)
class ModelFile:
    """A loaded model file: its SHA-256 (of the bytes), every digest a revision may record for it, the model."""

    sha256: str
    digests: frozenset[str]
    model: LoadedModel
    path: Path


@dataclass
class ModelCache:
    """Model files loaded once per content (a running service judges the same file every hour)."""

    loaded: dict[str, ModelFile] = field(default_factory=dict)  # the bytes' SHA-256 -> the model

    def load(self, ref: ModelRef) -> ModelFile:
        """The model file; an error when it is missing, unreadable or not the file the revision recorded."""
        from .model_train import load_model

        path = ref.path()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ModelHealthError(f"model file {path}: {exc.strerror or exc}") from None
        digests = file_digests(raw)
        if ref.sha256 is not None and ref.sha256 not in digests:
            raise ModelHealthError(f"model file {path}: its SHA-256 is not the {ref.sha256[:12]}… the strategy names")
        sha = hashlib.sha256(raw).hexdigest()
        if sha not in self.loaded:
            try:
                model = load_model(path)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                why = str(exc) if str(path) in str(exc) else f"model file {path}: not a model file ({exc})"
                raise ModelHealthError(why) from None
            self.loaded[sha] = ModelFile(sha, frozenset(digests), model, path)
        return self.loaded[sha]


# -- the stored feature rows -------------------------------------------------------------------------------


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool | str):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def feature_vector(
    features: Sequence[str],
    inputs: Mapping[str, Any] | None,
    layers: Mapping[str, Any] | None,
    score: float | None,
    direction: str | None,
) -> np.ndarray:
    """One ``features`` row in a model's feature order (module docstring; NaN = missing)."""
    inputs, layers = inputs or {}, layers or {}
    out = np.full(len(features), np.nan)
    for j, name in enumerate(features):
        if name == "score":
            out[j] = _number(score)
        elif name == "raw_score":
            points = [_number(v) for v in layers.values()]
            out[j] = round(sum(v for v in points if not math.isnan(v)), 6) if points else math.nan
        elif name == SIGN_FEATURE:
            out[j] = direction_sign(direction)
        elif name.startswith("layer_"):
            out[j] = _number(layers.get(name[len("layer_") :]))
        elif name.startswith("in_"):
            out[j] = _number(inputs.get(name[len("in_") :]))
    return out


def direction_sign(direction: str | None) -> float:
    return 1.0 if direction == "LONG" else -1.0 if direction == "SHORT" else 0.0


@dataclass
class Samples:
    """Labelled samples in time order (oldest first) with what the model needs."""

    ids: list[str]
    t0_ms: np.ndarray
    y: np.ndarray
    x: np.ndarray  # in the model's feature order
    sign: np.ndarray
    stored_p: np.ndarray  # the signal's own p_win (NaN: none, or made by another model)
    missing_features: int  # samples whose evaluation row was not found (every feature missing)

    def __len__(self) -> int:
        return len(self.ids)


def signals_have_p_win(conn: psycopg.Connection) -> bool:
    """Whether the signals table has the engine's ``p_win`` column yet."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'signals' AND column_name = 'p_win'"
            " AND table_schema = ANY(current_schemas(false))"
        )
        return cur.fetchone() is not None


_SAMPLES_SQL = """
SELECT ol.sample_id, (extract(epoch FROM ol.t0) * 1000)::bigint AS t0_ms, ol.label, s.config_rev,
       {p_win} AS p_win, f.inputs, f.layer_scores, f.score, coalesce(f.direction, s.direction) AS direction
FROM outcome_labels ol
LEFT JOIN positions o ON ol.sample_kind = 'trade' AND o.mode = ol.source AND o.position_id = ol.sample_id
     AND o.event = 'opened'
JOIN signals s ON s.signal_id = CASE WHEN ol.sample_kind = 'trade' THEN o.signal_id ELSE ol.sample_id END
LEFT JOIN features f ON f.evaluation_id = regexp_replace(s.signal_id, ':[^:]*$', '') AND f.eval_time = s.eval_time
WHERE ol.strategy = %(strategy)s AND ol.sample_kind = %(kind)s AND ol.horizon_h = %(horizon)s
  AND ol.source = ANY(%(sources)s) AND ol.t0 >= to_timestamp(%(from)s / 1000.0) AND ol.t0 < to_timestamp(%(to)s / 1000.0)
ORDER BY ol.t0 DESC, ol.sample_id DESC
LIMIT %(limit)s
"""


def read_samples(
    conn: psycopg.Connection,
    strategy: str,
    features: Sequence[str],
    *,
    kind: str = "trade",
    horizon_h: int = DEFAULT_HORIZON_H,
    sources: Sequence[str] = LIVE_SOURCES,
    from_ms: int = 0,
    to_ms: int = 2**62,
    limit: int | None = None,
    p_win_revs: Iterable[int] = (),
) -> Samples:
    """The newest ``limit`` (all when None) labelled samples of ``strategy`` with t0 in [from_ms, to_ms),
    oldest first; ``p_win_revs``: the revisions whose signals' ``p_win`` came from the model judged."""
    if kind not in ("trade", "signal"):
        raise ModelHealthError(f"sample kind {kind!r}: trade or signal")
    p_win = "s.p_win" if signals_have_p_win(conn) else "NULL::double precision"
    params = {
        "strategy": strategy,
        "kind": kind,
        "horizon": horizon_h,
        "sources": list(sources),
        "from": from_ms,
        "to": min(to_ms, 253_402_300_799_000),  # PostgreSQL's timestamps end in year 9999
        "limit": limit,
    }
    with conn.cursor() as cur:
        cur.execute(_SAMPLES_SQL.format(p_win=p_win), params)  # nosec B608 # a constant column expression; values are bound
        rows = cur.fetchall()[::-1]
    revs = set(p_win_revs)
    x = (
        np.vstack([feature_vector(features, r[5], r[6], r[7], r[8]) for r in rows])
        if rows
        else np.empty((0, len(features)))
    )
    stored = [float(r[4]) if r[4] is not None and r[3] in revs else math.nan for r in rows]
    return Samples(
        ids=[str(r[0]) for r in rows],
        t0_ms=np.asarray([int(r[1]) for r in rows], dtype=np.int64),
        y=np.asarray([1.0 if r[2] == "pos" else 0.0 for r in rows]),
        x=x,
        sign=np.asarray([direction_sign(r[8]) for r in rows]),
        stored_p=np.asarray(stored, dtype=np.float64),
        missing_features=sum(1 for r in rows if r[5] is None),
    )


def probabilities(model: LoadedModel, samples: Samples) -> np.ndarray:
    """The model's calibrated p of each sample: the signal's stored p_win where it has one from this
    model, else the model applied to the feature row."""
    if len(samples) == 0:
        return np.empty(0)
    p = model.predict(samples.x, samples.sign)
    return np.where(np.isnan(samples.stored_p), p, samples.stored_p)


def revisions_running(conn: psycopg.Connection, strategy: str, digests: Iterable[str]) -> list[int]:
    """The registered revisions of ``strategy`` whose file names the model with one of ``digests``
    (``file_digests``: their signals' p_win came from it)."""
    wanted = set(digests)
    with conn.cursor() as cur:
        cur.execute("SELECT rev, content FROM strategy_revisions WHERE name = %s", (strategy,))
        rows = cur.fetchall()
    out = []
    for rev, content in rows:
        try:
            ref = model_ref(content)
        except (ModelHealthError, ValueError):
            continue
        if ref is not None and ref.sha256 in wanted:
            out.append(int(rev))
    return out
