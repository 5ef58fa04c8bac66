"""``tapeflow model evaluate``: a confidence model file judged on what a strategy's trades (or signals)
really earned, over any window.

The samples are the strategy's outcome labels (``outcome_labels``, the stack's labels service writes
them) with t0 in ``[--from, --to)``, of the label sources given (paper, live, or a backtest's
``backtest:<run>``); the outcome is 1 when the label at ``--horizon-h`` is ``pos``. The model's p of each
is the signal's own ``p_win`` when the revision that made it ran this model, else the model file applied
to the stored feature row (``model_health``). Printed: AUC, Brier score and log loss, the reliability
table (equal-width bins of p: trades, mean p, observed win rate), the size map's bands and the health
verdict with the thresholds `strategy promote` and the guardrail apply (over every sample of the window).
Bad input is one ``error:`` line (``ResearchError``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from .cli import ResearchError, fmt_day, parse_time


def _conninfo(database: str | None) -> str:
    if database:
        return database
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.errors import TapeflowError
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import load_settings

    settings = load_settings()
    try:
        endpoints = resolve_database(settings, StackPaths(settings.home))
    except TapeflowError as error:
        raise ResearchError(f"{error} (or pass --database)") from None
    return endpoints.readonly or endpoints.owner


def evaluation(
    conninfo: str,
    model_path: Path,
    strategy: str,
    from_ms: int,
    to_ms: int,
    *,
    kind: str,
    sources: list[str],
    thresholds: Any,
    bins: int = 10,
) -> dict[str, Any]:
    """The evaluation document (module docstring)."""
    import psycopg

    from .model import metrics, reliability, size_table
    from .model_health import (
        HealthThresholds,
        ModelCache,
        ModelHealthError,
        ModelRef,
        probabilities,
        read_samples,
        revisions_running,
        rolling_health,
    )

    try:
        model = ModelCache().load(ModelRef(str(model_path)))
    except ModelHealthError as error:
        raise ResearchError(f"--model: {error}") from None
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            revs = revisions_running(conn, strategy, model.digests)
            samples = read_samples(
                conn,
                strategy,
                model.model.features,
                kind=kind,
                horizon_h=thresholds.horizon_h,
                sources=sources,
                from_ms=from_ms,
                to_ms=to_ms,
                p_win_revs=revs,
            )
    except psycopg.Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ResearchError(f"database: {first}") from None
    if len(samples) == 0:
        raise ResearchError(
            f"no labelled {kind}s of {strategy} at {thresholds.horizon_h} h from {fmt_day(from_ms)} to {fmt_day(to_ms)}"
            f" in {','.join(sources)} (the labels service writes them as they mature; `tapeflow labels backfill`)"
        )
    import numpy as np

    p = probabilities(model.model, samples)
    # the verdict over every sample of the window (at least the minimum, below which it is not judged)
    window = max(len(samples), thresholds.min_samples)
    whole = HealthThresholds(
        thresholds.min_auc, thresholds.max_brier, thresholds.min_samples, window, thresholds.horizon_h
    )
    health = rolling_health(samples.y, p, whole)
    return {
        "model": str(model_path),
        "model_sha256": model.sha256,
        "learner": model.model.learner,
        "strategy": strategy,
        "sample": kind,
        "sources": sources,
        "horizon_h": thresholds.horizon_h,
        "from_ms": from_ms,
        "to_ms": to_ms,
        "p_from_signals": int(np.count_nonzero(~np.isnan(samples.stored_p))),
        "missing_features": samples.missing_features,
        "metrics": metrics(samples.y, p),
        "reliability": reliability(samples.y, p, bins),
        "size_bands": size_table(samples.y, p),
        "thresholds": {"min_auc": whole.min_auc, "max_brier": whole.max_brier, "min_samples": thresholds.min_samples},
        "health": health.as_dict(),
    }


def summary_lines(doc: dict[str, Any]) -> list[str]:
    m, h = doc["metrics"], doc["health"]
    auc = "-" if m["auc"] is None else f"{m['auc']:.3f}"
    out = [
        f"model: {doc['model']} ({doc['learner']}, sha256 {doc['model_sha256'][:12]}) on {doc['strategy']}",
        f"samples: {m['rows']:,} labelled {doc['sample']}s ({m['positives']:,} pos at {doc['horizon_h']} h) from"
        f" {fmt_day(doc['from_ms'])} to {fmt_day(doc['to_ms'])} in {','.join(doc['sources'])};"
        f" p from the signals' p_win for {doc['p_from_signals']}, from the model file for the rest",
        f"AUC {auc}  Brier {m['brier']:.4f}  log loss {m['log_loss']:.4f}",
        "reliability:  p bin      samples  mean p  win rate",
    ]
    for r in doc["reliability"]:
        out.append(
            f"              {r['low']:.1f}-{r['high']:.1f}  {r['rows']:>8,}  {r['predicted']:>6.3f}  {r['observed']:>8.3f}"
        )
    out.append("size bands:   band                   x     samples  win rate")
    for b in doc["size_bands"]:
        rate = "-" if b["win_rate"] is None else f"{b['win_rate']:.3f}"
        out.append(f"              {b['band']:<20} {b['multiplier']:>4g} {b['rows']:>10,}  {rate:>8}")
    if doc["missing_features"]:
        out.append(f"note: {doc['missing_features']} samples had no stored evaluation row (every feature missing)")
    out.append(f"verdict: {h['status']} ({h['reason']})")
    return out


def evaluate_command(
    model: Path = typer.Option(..., "--model", help="The model file (model-<hash>.json of tapeflow model train)."),
    strategy: str = typer.Option(..., "--strategy", help="The strategy whose labelled trades judge it."),
    from_day: str = typer.Option(..., "--from", help="Start of t0, included: a UTC date, date-time or Unix ms."),
    to_day: str = typer.Option(..., "--to", help="End of t0, exclusive: a UTC date, date-time or Unix ms."),
    sample: str = typer.Option(
        "trade", "--sample", help="trade (closed trades) or signal (every signal, taken or not)."
    ),
    sources: str = typer.Option("paper,live", "--sources", help="Label sources: paper, live, backtest:<run id>."),
    horizon_h: int = typer.Option(12, "--horizon-h", min=1, help="The label horizon in hours (12, 24 or 36)."),
    min_auc: float = typer.Option(0.55, "--min-auc", help="Verdict: lowest healthy AUC."),
    max_brier: float = typer.Option(0.25, "--max-brier", help="Verdict: highest healthy Brier score."),
    min_samples: int = typer.Option(30, "--min-samples", min=1, help="Verdict: samples before a model is judged."),
    bins: int = typer.Option(10, "--bins", min=2, max=50, help="Reliability table: equal-width bins of p."),
    database: str | None = typer.Option(
        None, "--database", help="PostgreSQL conninfo or URL (default: TAPEFLOW_DATABASE_URL, else the stack's)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation as JSON."),
) -> None:
    """Judge a confidence model on a strategy's labelled trades (or signals) over any window: AUC, Brier
    score, log loss, reliability table, size bands and the health verdict promote and the guardrail use."""
    from .model_health import HealthThresholds, ModelHealthError

    from_ms, to_ms = parse_time(from_day, "--from"), parse_time(to_day, "--to")
    if to_ms <= from_ms:
        raise ResearchError(f"empty range: --to {to_day} is not after --from {from_day} (--to is excluded)")
    if sample not in ("trade", "signal"):
        raise ResearchError(f"--sample {sample!r}: trade or signal")
    names = [s.strip() for s in sources.split(",") if s.strip()]
    if not names:
        raise ResearchError("--sources: at least one label source (paper, live, backtest:<run id>)")
    if not model.is_file():
        raise ResearchError(f"--model {model}: no such file")
    try:
        thresholds = HealthThresholds(min_auc, max_brier, min_samples, max(min_samples, 1), horizon_h)
    except ModelHealthError as error:
        raise ResearchError(str(error)) from None
    doc = evaluation(
        _conninfo(database),
        model,
        strategy,
        from_ms,
        to_ms,
        kind=sample,
        sources=names,
        thresholds=thresholds,
        bins=bins,
    )
    if as_json:
        typer.echo(json.dumps(doc, allow_nan=False))
        return
    for line in summary_lines(doc):
        typer.echo(line)
