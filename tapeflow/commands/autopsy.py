"""`tapeflow autopsy`: why a closed trade made or lost what it did (``review.autopsy``).

`tapeflow autopsy TRADE_ID` prints one trade's autopsy (costs and TCA, peers, the counterfactual
table, the narrative); `--run RUN_ID` names a backtest trade. Without a trade id, `--strategy S --from
T --to T` prints where the strategy's money went: gross, fees, slippage and funding by tier, regime,
hour of entry and exit reason."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tapeflow.commands._common import app, echo, fail, parse_time, state

if TYPE_CHECKING:
    import psycopg

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="PostgreSQL conninfo or URL (default: TAPEFLOW_DATABASE_URL, else the running stack's database).",
    ),
]


def _conninfo(database: str | None) -> str:
    if database:
        return database
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.errors import TapeflowError

    try:
        endpoints = resolve_database(state.settings(), state.paths())
    except TapeflowError as exc:
        raise fail(f"{exc} (or pass --database)") from None
    return endpoints.readonly or endpoints.owner


def _connect(conninfo: str) -> psycopg.Connection:
    import psycopg

    try:
        return psycopg.connect(conninfo, connect_timeout=10)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise fail(f"cannot reach the database: {first}") from None


def _explainer() -> Any:
    """The confidence model's part in the trade, for the narrative (``backtest.research.model_health_explain``)."""
    from backtest.research.model_health_explain import TradeExplainer
    from tapeflow.commands.rollout import _running

    return TradeExplainer(_running)


def _f(x: float | None, spec: str = "+.2f", unit: str = "") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{spec}}{unit}"


def _time(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def render(a: dict[str, Any]) -> str:
    """The autopsy as readable sections."""
    t, c, tca, p = a["trade"], a["costs"], a["tca"], a["peers"]
    out = [
        f"trade {t['trade_id']} ({t['mode']}): {t['direction']} {t['symbol']} {t['strategy']} {t['tier']} tier,"
        f" regime {t['regime']}",
        f"  entry {_time(t['entry_time'])} at {t['entry_price']:g}, exit {_time(t['exit_time'])} at"
        f" {_f(t['exit_price'], 'g')} ({t['exit_reason']})",
        "",
        "costs",
        f"  gross {_f(c['gross_r'])}R  fees {_f(c['fees_r'], '.2f')}R  slippage {_f(c['slippage_r'], '.2f')}R"
        f"  funding {_f(c['funding_r'])}R  net {_f(c['net_r'])}R  ROI {_f(t['roi_pct'], '+.3f')} %",
        f"  cost share (fees + funding) / |gross|: {_f(tca['cost_share'], '.2f')}"
        f"   maker share: {_f(None if tca['maker_share'] is None else 100 * tca['maker_share'], '.0f', ' %')}",
    ]
    for o in tca["orders"]:
        out.append(
            f"  {o['leg']:<6} {o['side']:<4} qty {o['qty']:g} vwap {o['vwap']:g} mid at send {_f(o['mid_at_send'], 'g')}"
            f" ({o['mid_source'] or 'none'}): {_f(o['slip_bps'], '+.2f', ' bp')}"
        )
    if not tca["orders"]:
        out.append("  no orders or fills stored for this trade (a backtest trade): no TCA")
    out += ["", "peers"]
    note = f" ({p['fallback']})" if p["fallback"] else ""
    out.append(f"  group {p['group']}{note}: {p['count']} trades")
    if p["count"]:
        out.append(
            f"  percentile: net R {_f(p['net_r_percentile'], '.0f')}, ROI {_f(p['roi_percentile'], '.0f')},"
            f" holding time {_f(p['holding_percentile'], '.0f')}; peers' win rate {100 * p['win_rate']:.0f} %"
        )
    out += _counterfactual_table(a)
    out += ["", "narrative"] + [f"  {s}" for s in a["narrative"]]
    return "\n".join(out)


def _counterfactual_table(a: dict[str, Any]) -> list[str]:
    cf, m = a["counterfactuals"], a["model"]
    b = cf["baseline"]
    same = "reproduces the actual trade" if cf["replay_matches_actual"] else "differs from the actual trade"
    out = [
        "",
        f"counterfactuals (replay: taker fee {m['taker_fee'] * 1e4:g} bp, slippage {m['slippage_bps']:g} bp;"
        f" x1 {same})",
        f"  {'change':<16}{'exit':<14}{'exit time':<21}{'net R':>8}{'ROI %':>9}{'dnet R':>9}{'dROI %':>9}",
        f"  {'as traded x1':<16}{b['exit_reason']:<14}{_time(b['exit_time']):<21}{_f(b['net_r']):>8}"
        f"{_f(b['roi_pct'], '+.3f'):>9}{'0.00':>9}{'0.000':>9}",
    ]
    for s in cf["scenarios"]:
        out.append(
            f"  {s['knob'] + ' x' + format(s['scale'], 'g'):<16}{s['exit_reason']:<14}{_time(s['exit_time']):<21}"
            f"{_f(s['net_r']):>8}{_f(s['roi_pct'], '+.3f'):>9}{_f(s['delta_net_r']):>9}{_f(s['delta_roi_pct'], '+.3f'):>9}"
        )
    out += [f"  note: {n}" for n in m["notes"]]
    return out


def render_aggregate(r: dict[str, Any]) -> str:
    cols = ("trades", "wins", "gross_r", "fees_r", "slippage_r", "funding_r", "net_r")
    head = f"  {'':<18}{'trades':>7}{'win %':>7}{'gross R':>10}{'fees R':>9}{'slip R':>9}{'fund R':>9}{'net R':>9}"

    def line(name: str, b: dict[str, float]) -> str:
        win = 100 * b["wins"] / b["trades"] if b["trades"] else 0.0
        sums = "".join(f"{b[k]:>{10 if k == 'gross_r' else 9}.2f}" for k in cols[2:])
        return f"  {name:<18}{int(b['trades']):>7}{win:>7.0f}{sums}"

    out = [
        f"strategy {r['strategy']} ({', '.join(r['modes'])}), exits {_time(r['from'])} to {_time(r['to'])} UTC",
        head,
    ]
    out.append(line("all", r["total"]))
    for dim, buckets in r["by"].items():
        out += ["", f"by {dim.replace('_', ' ')}", head] + [line(k, b) for k, b in buckets.items()]
    if r["worst"]:
        out += ["", "worst trades (tapeflow autopsy ID)"]
        out += [f"  {w['position_id']}  {w['net_r']:+.2f}R  {w['exit_reason']}" for w in r["worst"]]
    return "\n".join(out)


def _demo(as_json: bool) -> None:
    """An embedded PostgreSQL of its own (gone afterwards), the demo day stored in it as the sink stores
    the stack's records, then the strategy's report and the autopsy of its worst trade."""
    import tempfile
    from pathlib import Path

    import psycopg

    from review.autopsy_db import aggregate, autopsy
    from review.autopsy_demo import HOURS, START_MS, STRATEGY, demo_records
    from sinks.migrate import migrate
    from sinks.tables import table_for_topic, write_rows
    from tapeflow.stack.postgres import EmbeddedPostgres
    from tapeflow.stack.supervisor import Supervisor
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import Settings

    records = demo_records()
    with tempfile.TemporaryDirectory(prefix="tapeflow-autopsy-demo-") as tmp:
        paths = StackPaths(Path(tmp))
        paths.ensure()
        settings = Settings(home=Path(tmp), broker=None, database_url=None)
        pg = EmbeddedPostgres(settings, paths)
        sup = Supervisor(settings, paths, say=lambda m: None, services=[pg], steps=[])
        sup.start_all()
        try:
            conninfo = pg.admin_conninfo(sup.addresses["database"], "tapeflow")
            migrate(conninfo)
            with psycopg.connect(conninfo) as conn:
                for topic, rows in records.items():
                    spec = table_for_topic(topic)
                    write_rows(conn, spec, [spec.to_row(r) for r in rows])
                conn.commit()
                report = aggregate(conn, STRATEGY, START_MS, START_MS + HOURS * 3_600_000)
                worst = autopsy(conn, report["worst"][0]["position_id"]).as_dict()
        finally:
            sup.stop_all()
    if as_json:
        echo(json.dumps({"report": report, "autopsy": worst}, default=str))
        return
    echo(render_aggregate(report))
    echo("")
    echo(render(worst))


@app.command("autopsy")
def autopsy(
    trade_id: Annotated[str | None, typer.Argument(help="The position id of a closed trade.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="The backtest run the trade belongs to.")] = None,
    mode: Annotated[
        str | None,
        typer.Option("--mode", help="paper, testnet or live: the trade's (an id in several), the report's (paper)."),
    ] = None,
    strategy: Annotated[
        str | None, typer.Option("--strategy", help="Without TRADE_ID: the strategy to report on.")
    ] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Report: exits from this time (ISO 8601, UTC).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Report: exits before this time (ISO 8601, UTC).")] = None,
    database: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Offline demo: a synthetic day of paper trades in a database of its own."),
    ] = False,
) -> None:
    """Why a closed trade made or lost what it did: costs against the mid at send, peers, counterfactual exits
    and a narrative; without TRADE_ID, where a strategy's money went over a period."""
    if demo:
        _demo(as_json)
        return
    if trade_id is None and strategy is None:
        raise fail("give a TRADE_ID, or --strategy with --from and --to for the report", 2)
    if trade_id is None and (from_ is None or to is None):
        raise fail("the report needs --from and --to", 2)
    from review.autopsy_db import AutopsyError, aggregate
    from review.autopsy_db import autopsy as run_autopsy

    conninfo = _conninfo(database)
    with _connect(conninfo) as conn:
        try:
            if trade_id is not None:
                doc = run_autopsy(conn, trade_id, mode=mode, run_id=run, explain=_explainer()).as_dict()
                echo(json.dumps(doc, default=str) if as_json else render(doc))
                return
            start, end = parse_time(from_ or "", "--from"), parse_time(to or "", "--to")
            if end <= start:
                raise fail("--to must be after --from", 2)
            report = aggregate(
                conn, strategy or "", int(start.timestamp() * 1000), int(end.timestamp() * 1000), [mode or "paper"]
            )
        except AutopsyError as exc:
            raise fail(str(exc)) from None
    echo(json.dumps(report) if as_json else render_aggregate(report))
