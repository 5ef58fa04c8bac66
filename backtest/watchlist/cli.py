"""``tapeflow watchlist backtest`` and ``tapeflow watchlist fit`` (the ``tapeflow`` CLI registers them
under its ``watchlist`` group). Failures are one ``error:`` line with a non-zero exit code."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import typer

from stream_apps.core.durations import format_duration_ms, parse_duration_ms
from stream_apps.watchlist.model import DEFAULT_FACTORS, FACTORS, ModelFileError, load_model
from tapeflow_runtime.errors import TapeflowError

if TYPE_CHECKING:
    from stream_apps.watchlist.strategy import WatchlistStrategy

# the runner, the model fit, the strategy (numba and the engine's strategy code with them) and the
# sources (numpy with the synthetic session: ~0.15 CPU-s) are imported where a command runs: every
# `tapeflow` process imports this module to register the commands

SOURCE_HELP = (
    "synthetic[:SEED] (a generated session of --minutes and --coins) | broker[:PREFIX] (md.book/md.mark/"
    "md.indicators read from the broker as the live watchlist service reads them; default: the stack's "
    "topics) | db (the same inputs from the database, --from/--to or the last --minutes) | jsonl:FILE (md.book/md.mark/"
    "md.indicators records, e.g. `tapeflow topics tail md.book --from-beginning --json` of each topic "
    "concatenated)"
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _coins(text: str) -> tuple[str, ...]:
    from backtest.watchlist.sources import WatchlistSourceError

    coins = tuple(c.strip().upper() for c in text.split(",") if c.strip())
    if not coins:
        raise WatchlistSourceError("--coins: at least one coin")
    return coins


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%m-%d %H:%M:%S")


def _bp(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e4:+.1f}"


def render_backtest(strategy: WatchlistStrategy, source: str, inputs: int, result: Any, limit: int = 20) -> str:
    s = result.summary
    lines = [
        f"watchlist backtest {strategy.name} {strategy.version} (config {strategy.config_hash[:12]}) over "
        f"{source}: {inputs:,} inputs, {s['evaluations']:,} evaluations",
        f"signals {s['signals']} (rejected {s['rejected']}), pairs {s['pairs']}: {s['closed']} closed, "
        f"{s['failed']} failed (unwound), {s['open']} open, {s['refused']} refused",
        f"pnl net {s['net_usd']:+,.2f} USDT = gross {s['gross_usd']:+,.2f} - fees {s['fees_usd']:,.2f} - sweep "
        f"{s['slippage_usd']:,.2f} - leg latency {s['leg_latency_usd']:+,.2f} - funding {s['funding_usd']:+,.2f}"
        f" - liquidation {s['liquidation_usd']:,.2f}"
        + (
            ""
            if s["win_rate"] is None
            else f"; win rate {s['win_rate']:.0%}, mean {s['mean_net_bp']:+.1f} bp of notional per closed pair"
        ),
    ]
    if s["by_close_reason"]:
        lines.append(
            "by close reason: "
            + ", ".join(f"{k} {v['pairs']} ({v['net_usd']:+,.2f})" for k, v in s["by_close_reason"].items())
        )
    if s.get("by_pair"):
        lines.append(
            f"{'pair key':<22} {'pairs':>5} {'gross':>9} {'fees':>8} {'sweep':>8} {'latency':>8} "
            f"{'funding':>8} {'liquid.':>8} {'net':>9}"
        )
        for key, v in s["by_pair"].items():
            lines.append(
                f"{key:<22} {v['pairs']:>5} {v['gross_usd']:>+9.2f} {v['fees_usd']:>8.2f} "
                f"{v['slippage_usd']:>8.2f} {v['leg_latency_usd']:>+8.2f} {v['funding_usd']:>+8.2f} "
                f"{v['liquidation_usd']:>8.2f} {v['net_usd']:>+9.2f}"
            )
    pairs = result.pairs
    if pairs:
        lines.append(
            f"{'#':>3}  {'coin':<5} {'short -> long':<18} {'opened':<14} {'held':>7} {'entry bp':>9} "
            f"{'exit bp':>8} {'net USDT':>9}  close"
        )
        for i, p in enumerate(pairs[:limit], 1):
            held = "-" if p["closed_ms"] is None else f"{(p['closed_ms'] - p['opened_ms']) / 60_000:.1f}m"
            close = p["close_reason"] or p["status"] if p["status"] != "rejected" else f"refused: {p['reason']}"
            lines.append(
                f"{i:>3}  {p['coin']:<5} {p['short_venue'] + ' -> ' + p['long_venue']:<18} "
                f"{_when(p['opened_ms']):<14} {held:>7} {_bp(p['entry_spread']):>9} {_bp(p['exit_spread']):>8} "
                f"{p['net_usd']:>+9.2f}  {close}"
            )
        if len(pairs) > limit:
            lines.append(f"     ... {len(pairs) - limit} more (--out DIR writes every pair, signal, order and payment)")
    else:
        lines.append("no pair traded: no evaluation met the triggers (see signal_counters with --json)")
    return "\n".join(lines)


def _strategy(path: Path) -> WatchlistStrategy:
    from backtest.watchlist.sources import WatchlistSourceError
    from stream_apps.watchlist.strategy import load_watchlist_strategy

    if not path.is_file():
        raise WatchlistSourceError(f"strategy file {path} does not exist")
    return load_watchlist_strategy(path)


def backtest(
    strategy_file: Path = typer.Option(..., "--strategy", "-s", help="A kind: watchlist strategy file (YAML/JSON)."),
    source: str = typer.Option("synthetic", "--source", help=SOURCE_HELP),
    minutes: float = typer.Option(
        120.0,
        "--minutes",
        min=1.0,
        help="synthetic: the session's length; db: the last this many minutes unless --from/--to say otherwise.",
    ),
    coins: str = typer.Option("BTC,ETH", "--coins", help="synthetic: comma-separated coins."),
    from_: str | None = typer.Option(
        None, "--from", help="db: start, included: a UTC date or time (2024-01-01[T00:00]) or Unix ms."
    ),
    to: str | None = typer.Option(None, "--to", help="db: end, exclusive: a UTC date (its midnight), time or Unix ms."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Directory for result.json (summary, pairs, signals, leg orders, funding payments, blocked exits).",
    ),
    limit: int = typer.Option(20, "--limit", min=1, help="Pairs listed."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    leg_latency_ms: int | None = typer.Option(
        None,
        "--leg-latency-ms",
        min=0,
        max=60_000,
        help="What-if: every "
        "venue's one-way leg latency in ms (legs fill IOC on the book "
        "they meet on arrival: docs/how-to/leg-fills.md). Overrides the "
        "strategy's legs.latency_ms; without either, both legs fill at "
        "the signal's books at once.",
    ),
    instrument_rules: Path | None = typer.Option(
        None,
        "--instrument-rules",
        help="The venues' lot steps, "
        "minimum order sizes and minimum notionals (`tapeflow "
        "watchlist rules --out FILE`): pairs trade quantities the "
        "venues accept. Without it they are unrounded.",
    ),
) -> None:
    """Backtest a watchlist strategy: features, triggers, entry re-check and hedged paper pairs over a session."""
    from backtest.cli import CliError, parse_time
    from backtest.watchlist.runner import run_backtest
    from backtest.watchlist.sources import load_session
    from execution.instrument_rules import InstrumentRules
    from stream_apps.core.strategy import StrategyConfigError
    from stream_apps.watchlist.strategy import model_path

    try:
        strategy = _strategy(strategy_file)
        model = load_model(model_path(strategy)) if strategy.model is not None else None
        start_ms = parse_time(from_, "--from") if from_ else None
        end_ms = parse_time(to, "--to") if to else None
        events = load_session(source, minutes, _coins(coins), tuple(strategy.venues), start_ms, end_ms)
        rules = InstrumentRules.load(instrument_rules) if instrument_rules is not None else None
        result = run_backtest(strategy, events, model, rules=rules, leg_latency_ms=leg_latency_ms)
    except (TapeflowError, StrategyConfigError, ModelFileError, CliError) as error:
        raise _fail(str(error)) from None
    except ValueError as error:
        raise _fail(str(error), 2) from None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "result.json").write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2))
        except OSError as error:
            raise _fail(f"{out}: cannot write: {error.strerror or error}") from None
    if json_out:
        typer.echo(orjson.dumps(result.summary, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(render_backtest(strategy, source, len(events), result, limit))
        if out is not None:
            typer.echo(f"wrote {out / 'result.json'}")


def fit(
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (JSON); a strategy's model.file."),
    source: str = typer.Option("synthetic", "--source", help=SOURCE_HELP),
    features: Path | None = typer.Option(
        None,
        "--features",
        help="Fit on recorded xv.features records instead "
        "(JSON lines, e.g. `tapeflow topics tail xv.features --from-beginning "
        "--json`).",
    ),
    strategy_file: Path | None = typer.Option(
        None,
        "--strategy",
        "-s",
        help="Take venues, notional, fees and the sampling grid from this watchlist strategy.",
    ),
    minutes: float = typer.Option(240.0, "--minutes", min=1.0, help="synthetic: the session's length."),
    coins: str = typer.Option("BTC,ETH", "--coins", help="synthetic: comma-separated coins."),
    horizon: str = typer.Option("10m", "--horizon", help="Hold each labelled entry this long (e.g. 10m, 1h)."),
    factors: str = typer.Option(
        ",".join(DEFAULT_FACTORS), "--factors", help=f"Comma-separated, of: {', '.join(FACTORS)}."
    ),
    alpha: float = typer.Option(0.01, "--alpha", min=0.0, help="Ridge penalty of the expected-pnl model."),
    l2: float = typer.Option(0.01, "--l2", min=0.0, help="L2 penalty of the win-probability model."),
    test_fraction: float = typer.Option(
        0.3, "--test-fraction", min=0.05, max=0.9, help="The last share of evaluation times kept out of the fit."
    ),
) -> None:
    """Fit the expected-pnl (ridge) and win-probability (logistic) model, scored out of sample."""
    from backtest.research.watchlist_model import fit_model, label_records, session_records
    from backtest.watchlist.runner import cross_venue_params
    from backtest.watchlist.sources import WatchlistSourceError, load_session
    from stream_apps.core.strategy import StrategyConfigError
    from stream_apps.watchlist.strategy import parse_watchlist_strategy

    try:
        horizon_ms = parse_duration_ms(horizon)
        names = tuple(f.strip() for f in factors.split(",") if f.strip())
        unknown = [f for f in names if f not in FACTORS]
        if unknown or not names:
            raise WatchlistSourceError(f"--factors: unknown {unknown or 'none given'}; known: {', '.join(FACTORS)}")
        strategy = (
            _strategy(strategy_file)
            if strategy_file is not None
            else parse_watchlist_strategy(
                {"kind": "watchlist", "name": "fit", "version": "1", "triggers": {"min_net_spread_bp": 0}}
            )
        )
        if features is not None:
            records = _read_features(features)
            where = str(features)
        else:
            if horizon_ms % strategy.eval_interval:
                raise WatchlistSourceError(
                    f"--horizon {horizon}: must be a whole number of the strategy's "
                    f"eval_interval ({format_duration_ms(strategy.eval_interval)}): "
                    "a label is the record that many evaluations later"
                )
            params = cross_venue_params(strategy)
            events = load_session(source, minutes, _coins(coins), tuple(strategy.venues))
            records = session_records(events, params, strategy.eval_interval)
            where = f"{source} ({len(events):,} inputs)"
        rows, labels = label_records(records, horizon_ms, strategy.four_fees)
        fees = 4 * strategy.fees.default  # informational: the labels take each pair's own fees
        model = fit_model(rows, labels, horizon_ms, fees, names, alpha, l2, test_fraction)
    except (TapeflowError, StrategyConfigError) as error:
        raise _fail(str(error)) from None
    except ValueError as error:
        raise _fail(str(error), 2) from None
    try:
        digest = model.save(out)
    except OSError as error:
        raise _fail(f"{out}: cannot write: {error.strerror or error}") from None
    typer.echo(render_fit(model, where, len(records), out, digest))


def register(watchlist: typer.Typer) -> None:
    """Add ``backtest`` and ``fit`` to the ``tapeflow watchlist`` group."""
    watchlist.command("backtest")(backtest)
    watchlist.command("fit")(fit)


def _read_features(path: Path) -> list[dict[str, Any]]:
    from backtest.watchlist.sources import WatchlistSourceError

    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise WatchlistSourceError(f"{path}: cannot read: {error.strerror or error}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            record = item.get("value", item.get("record", item))
            record["eval_time"], record["coin"]  # noqa: B018 - the keys a row needs
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as error:
            raise WatchlistSourceError(f"{path}:{number}: not an xv.features record ({error!s:.80})") from None
        records.append(record)
    return records


def render_fit(model: Any, where: str, n_records: int, out: Path, digest: str) -> str:
    f = model.fit
    o = f["out_of_sample"]

    def num(key: str, fmt: str) -> str:
        return "-" if o.get(key) is None else format(o[key], fmt)

    missing = ", ".join(f"{k} {v:.0%}" for k, v in f["missing_share"].items())
    return "\n".join(
        [
            f"fitted on {where}: {n_records:,} feature records, {f['rows']:,} with a label at "
            f"{format_duration_ms(model.horizon_ms)} ({f['train_rows']:,} train, {f['test_rows']:,} test, "
            f"{f['embargoed_rows']:,} embargoed), four fees {model.fees * 1e4:.1f} bp",
            f"out of sample: R² {num('r2', '.3f')}, rank IC {num('rank_ic', '.3f')}, AUC {num('auc', '.3f')}, Brier "
            f"{num('brier', '.3f')}, log loss {num('log_loss', '.3f')} (base win rate {o['base_win_rate']:.1%}, "
            f"mean pnl {o['mean_pnl'] * 1e4:+.1f} bp)",
            f"factors missing in training (imputed at the mean): {missing}",
            f"wrote {out} (sha256 {digest[:12]}); use it in a strategy: "
            f"model: {{file: {out.name}, min_expected_pnl_bp: 5, min_win_prob: 0.6}}",
        ]
    )
