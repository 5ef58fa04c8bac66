"""``tapeflow model``: the confidence model's commands (the ``tapeflow`` CLI only registers them).

``tapeflow model train`` exports the strategy's evaluations with every detector on (``research export``,
resumable: a second run reuses the days written), builds the dataset, validates both learners by purged
K-fold and walk-forward, calibrates, explains, and writes the model file and its HTML report. Failures
are one ``error:`` line (``ResearchError``).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import typer

from .cli import DEFAULT_SYMBOLS, ResearchError, _named_strategy, export_source_options, fmt_day, parse_time

MIN_ROWS = 500
HOUR_MS = 3_600_000

model_app = typer.Typer(
    help="The confidence model p = P(win | features): train and validate it without leakage.",
    no_args_is_help=True,
)


def _duration(text: str, option: str) -> int:
    from stream_apps.core.durations import parse_duration_ms

    try:
        return parse_duration_ms(text.strip())
    except ValueError as error:
        raise ResearchError(f"{option}: {error}") from None


def default_walk_forward(from_ms: int, to_ms: int, horizon_ms: int) -> Any:
    """Train on half of the range, test on a tenth, step a tenth (whole hours), embargo one label window."""
    from .windows import WalkForwardSpec

    span = to_ms - from_ms
    train = max(span // 2 // HOUR_MS, 1) * HOUR_MS
    test = max(span // 10 // HOUR_MS, 1) * HOUR_MS
    return WalkForwardSpec(train, test, test, horizon_ms)


def _export(
    cfg: Any, source: str, names: list[str], from_ms: int, to_ms: int, out: Path, overwrite: bool, progress: bool
) -> Path:
    """The strategy's training export (resumable), and its folder."""
    from tqdm import tqdm

    from backtest.sources import SourceError

    from .export import DAY_MS, ExportError, day_name, export

    options = export_source_options(source)
    began = time.perf_counter()
    with tqdm(total=len(names) * ((to_ms - from_ms) // DAY_MS), desc="export", unit="day", disable=not progress) as bar:

        def on_day(symbol: str, day_ms: int, outcome: str) -> None:
            bar.set_postfix_str(f"{symbol} {day_name(day_ms)} {outcome}")
            bar.update()

        try:
            summary = export(
                cfg, source, names, from_ms, to_ms, out, options=options, overwrite=overwrite, on_day=on_day
            )
        except (ExportError, SourceError) as error:  # the export's own advice names its --out: here --export-dir
            raise ResearchError(str(error).replace("another --out", "another --export-dir")) from None
    if summary.written == summary.skipped == 0:
        raise ResearchError(
            f"no evaluations for {','.join(names)} from {fmt_day(from_ms)} to {fmt_day(to_ms)} in {source}"
        )
    typer.echo(
        f"data: {summary.written} symbol-days exported, {summary.skipped} reused "
        f"({time.perf_counter() - began:.0f} s; {out / cfg.name})",
        err=True,
    )
    return out / cfg.name


def _dataset(
    root: Path,
    from_ms: int,
    to_ms: int,
    names: list[str] | None,
    target: str,
    horizon_ms: int,
    rows: str,
    min_rows: int,
    every_ms: int = 1000,
) -> Any:
    from .model_data import ModelDataError, from_table, read_export

    try:
        table = read_export(root, from_ms, to_ms, names)
        if table.num_rows == 0:
            raise ResearchError(f"no evaluations in {root} from {fmt_day(from_ms)} to {fmt_day(to_ms)}")
        data = from_table(table, target, horizon_ms, rows, every_ms)
    except ModelDataError as error:
        raise ResearchError(str(error)) from None
    wins = int(data.y.sum())
    if len(data) < min_rows or wins < 10 or len(data) - wins < 10:
        raise ResearchError(
            f"too few labels: {len(data):,} rows with a {target} label ({wins:,} wins) from {fmt_day(from_ms)} to "
            f"{fmt_day(to_ms)}; need at least {min_rows:,} (--min-rows) and 10 of each outcome"
        )
    return data


@model_app.command("train")
def train_command(
    from_day: str = typer.Option(..., "--from", help="Start, included: a UTC date, date-time or Unix ms."),
    to_day: str = typer.Option(..., "--to", help="End, exclusive: a UTC date (its midnight), date-time or Unix ms."),
    strategy: str = typer.Option(
        "v53", "--strategy", help="A shipped strategy's name (v53, v52_8signals, v51_baseline) or a strategy file."
    ),
    symbols: str = typer.Option(DEFAULT_SYMBOLS, "--symbols", help="Comma-separated symbols."),
    source: str = typer.Option(
        "synthetic:7",
        "--source",
        help="synthetic[:SEED], vision[:DIR], recording:DIR, db or topics (as research export).",
    ),
    data_dir: Path | None = typer.Option(
        None, "--data", help="Read this export folder (OUT/STRATEGY of research export) instead of exporting."
    ),
    export_dir: Path = typer.Option(
        Path("research-out/model-data"), "--export-dir", help="Where the training export (detectors on) is kept."
    ),
    detectors: bool = typer.Option(True, "--detectors/--no-detectors", help="Export with every detector on."),
    target: str = typer.Option("y_binary_60m", "--target", help="The 0/1 label column to predict."),
    horizon: str | None = typer.Option(None, "--horizon", help="Label window (default: from the target's name)."),
    rows: str = typer.Option("all", "--rows", help="all (every evaluation with a direction) or signals."),
    every: str = typer.Option(
        "1s", "--every", help="Keep one evaluation per symbol in each interval this long (1s: every evaluation)."
    ),
    folds: int = typer.Option(5, "--folds", min=2, max=50, help="Purged K-fold folds."),
    embargo: str | None = typer.Option(
        None, "--embargo", help="Embargo after each test fold (default: the label window)."
    ),
    walk_forward: str | None = typer.Option(
        None, "--walk-forward", help="train=,test=,step=[,embargo=] (default: train half the range, test a tenth)."
    ),
    calibration: str = typer.Option("isotonic", "--calibration", help="isotonic or platt."),
    ablation: bool = typer.Option(True, "--ablation/--no-ablation", help="Also fit without the detector columns."),
    min_rows: int = typer.Option(MIN_ROWS, "--min-rows", min=10, help="Fewer labelled rows is an error."),
    out: Path = typer.Option(Path("research-out/models"), "--out", help="Directory of the model file and report."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Re-export days already exported."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Threads per fit (default: all cores)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
) -> None:
    """Train the confidence model p = P(win | features) of a strategy's evaluations: logistic regression
    and LightGBM, purged K-fold with embargo and walk-forward, calibration, SHAP; writes the model file
    (named by its content) and an HTML report."""
    from .model_data import horizon_of, with_detectors

    from_ms, to_ms = parse_time(from_day, "--from"), parse_time(to_day, "--to")
    if to_ms <= from_ms:
        raise ResearchError(f"empty range: --to {to_day} is not after --from {from_day} (--to is excluded)")
    cfg = _named_strategy(strategy)
    if detectors:
        cfg = with_detectors(cfg)
    horizon_ms = _duration(horizon, "--horizon") if horizon else horizon_of(target)
    if horizon_ms is None:
        raise ResearchError(f"--horizon: the label window of {target!r} cannot be read from its name; give it")
    names = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    if not names:
        raise ResearchError("--symbols: at least one symbol")
    if data_dir is None:
        root = _export(cfg, source, names, from_ms, to_ms, export_dir, overwrite, not no_progress)
        identity = {"name": cfg.name, "config_hash": cfg.config_hash}
    else:
        root, identity = data_dir, _export_identity(data_dir)
    data = _dataset(root, from_ms, to_ms, names, target, horizon_ms, rows, min_rows, _duration(every, "--every"))
    _train_and_report(
        data,
        identity,
        from_ms,
        to_ms,
        folds=folds,
        embargo=embargo,
        walk_forward=walk_forward,
        calibration=calibration,
        ablation=ablation,
        out=out,
        threads=threads,
        progress=not no_progress,
    )


def _export_identity(root: Path) -> dict[str, str]:
    """The strategy name and config hash an export folder's ``_schema.json`` records."""
    import json

    from .export import SCHEMA_FILE

    try:
        schema = json.loads((root / SCHEMA_FILE).read_text())
        return {"name": str(schema["strategy"]), "config_hash": str(schema["config_hash"])}
    except (OSError, ValueError, KeyError, TypeError):
        raise ResearchError(f"--data {root}: not an export folder (no readable {SCHEMA_FILE})") from None


def _options(
    data: Any,
    from_ms: int,
    to_ms: int,
    folds: int,
    embargo: str | None,
    walk_forward: str | None,
    calibration: str,
    ablation: bool,
    threads: int | None,
) -> Any:
    from .model import CALIBRATIONS
    from .model_train import TrainOptions
    from .windows import parse_walk_forward, rolling_windows

    if calibration not in CALIBRATIONS:
        raise ResearchError(f"--calibration {calibration!r}: use one of {', '.join(CALIBRATIONS)}")
    embargo_ms = _duration(embargo, "--embargo") if embargo else data.horizon_ms
    try:
        spec = (
            parse_walk_forward(walk_forward, default_embargo_ms=data.horizon_ms)
            if walk_forward
            else default_walk_forward(from_ms, to_ms, data.horizon_ms)
        )
        rolling_windows(spec, from_ms, to_ms)
    except ValueError as error:
        if walk_forward:
            raise ResearchError(str(error)) from None
        spec = None  # the default does not fit a range this short: purged K-fold only
    return TrainOptions(folds, embargo_ms, calibration, spec, ablation, threads=threads)


def _train_and_report(
    data: Any,
    strategy: dict[str, str],
    from_ms: int,
    to_ms: int,
    *,
    folds: int,
    embargo: str | None,
    walk_forward: str | None,
    calibration: str,
    ablation: bool,
    out: Path,
    threads: int | None,
    progress: bool,
) -> None:
    from tqdm import tqdm

    from .model_report import summary_lines, write_html
    from .model_train import model_document, save_model, train

    options = _options(data, from_ms, to_ms, folds, embargo, walk_forward, calibration, ablation, threads)
    typer.echo(
        f"dataset: {len(data):,} evaluations ({int(data.y.sum()):,} wins), {len(data.features)} features "
        f"({len(data.detector_features)} from detectors), {fmt_day(from_ms)} .. {fmt_day(to_ms)}"
    )
    began = time.perf_counter()
    with tqdm(desc="model", unit="fit", disable=not progress) as bar:

        def on_fit(what: str) -> None:
            bar.set_postfix_str(what)
            bar.update()

        try:
            trained = train(data, options, from_ms, to_ms, on_fit)
        except ValueError as error:
            raise ResearchError(str(error)) from None
    document = model_document(trained, strategy)
    path = save_model(document, out)
    report = write_html(document, path, path.with_suffix(".html"))
    for line in summary_lines(document):
        typer.echo(line)
    typer.echo(f"trained in {time.perf_counter() - began:.0f} s")
    typer.echo(f"model: {path}")
    # what a strategy's `model: {file, sha256}` names (the engine refuses the file on another hash)
    typer.echo(f"sha256: {hashlib.sha256(Path(path).read_bytes()).hexdigest()}")
    typer.echo(f"report: {report}")


def register(app: typer.Typer) -> None:
    """Add ``model`` to the ``tapeflow`` app (``model evaluate`` is defined in ``model_eval``)."""
    from .model_eval import evaluate_command  # here, not at the top: model_eval's imports are heavier

    if all(c.callback is not evaluate_command for c in model_app.registered_commands):  # once per process
        model_app.command("evaluate")(evaluate_command)
    app.add_typer(model_app, name="model")
