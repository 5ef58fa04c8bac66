"""`tapeflow watchlist backtest` on a recorded session (topics-tail JSON lines), its result file, and
one-line errors; in process (typer's runner), no broker or database."""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from stream_apps.cross_venue.events import BookEvent
from tapeflow.cli import app
from tests.backtest.watchlist.test_runner import hand_session


def line(event) -> bytes:
    """What `tapeflow topics tail md.book|md.mark --json` prints for the producers' record of `event`."""
    if isinstance(event, BookEvent):
        record = {
            "exchange": event.exchange,
            "symbol": event.symbol,
            "event_time": event.time_ms,
            "bids": [{"price": p, "qty": q} for p, q in event.bids],
            "asks": [{"price": p, "qty": q} for p, q in event.asks],
        }
        topic = "md.book"
    else:
        record = {
            "exchange": event.exchange,
            "symbol": event.symbol,
            "event_time": event.time_ms,
            "funding_rate": event.funding_rate,
            "next_funding_time": event.next_funding_time_ms,
            "mark_price": 100.0,
        }
        topic = "rehearsal.md.mark"  # a prefixed topic name reads the same
    return orjson.dumps(
        {
            "topic": topic,
            "partition": 0,
            "offset": 0,
            "timestamp": event.time_ms,
            "key": f"{event.exchange}:{event.symbol}",
            "value": record,
        }
    )


def test_backtest_command_on_a_recorded_session_and_its_one_line_errors(tmp_path):
    events = hand_session()
    books = [e for e in events if isinstance(e, BookEvent)]
    marks = [e for e in events if not isinstance(e, BookEvent)]
    session = tmp_path / "session.jsonl"
    session.write_bytes(b"\n".join(map(line, books + marks)) + b"\n")  # topic files concatenated
    strategy = tmp_path / "xv.yaml"
    strategy.write_text(
        "kind: watchlist\nname: xv_hand\nversion: '1'\nvenues: [binance, okx]\nnotional_usd: 1000\n"
        "triggers: {min_net_spread_bp: 5}\nexits: {exit_spread_bp: 20}\n"
    )
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "watchlist",
            "backtest",
            "--strategy",
            str(strategy),
            "--source",
            f"jsonl:{session}",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "signals 1 (rejected 0), pairs 1: 1 closed" in result.output
    assert "binance -> okx" in result.output and "convergence" in result.output
    saved = orjson.loads((tmp_path / "out" / "result.json").read_bytes())
    assert saved["pairs"][0]["close_reason"] == "convergence" and len(saved["orders"]) == 4
    assert len(saved["funding"]) == 2
    # the what-if: every leg 150 ms away from its venue, filling on the book it meets (here the same books)
    result = runner.invoke(
        app,
        [
            "watchlist",
            "backtest",
            "--strategy",
            str(strategy),
            "--source",
            f"jsonl:{session}",
            "--leg-latency-ms",
            "150",
            "--out",
            str(tmp_path / "late"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "- leg latency +0.00 -" in result.output and "BTC:binance/okx" in result.output
    late = orjson.loads((tmp_path / "late" / "result.json").read_bytes())
    assert [o["time_ms"] - o["sent_ms"] for o in late["orders"]] == [150] * 4
    assert late["summary"]["by_pair"]["BTC:binance/okx"]["net_usd"] == late["summary"]["net_usd"]
    assert late["summary"]["net_usd"] == saved["summary"]["net_usd"] and late["summary"]["leg_latency_usd"] == 0
    assert (
        runner.invoke(
            app,
            [
                "watchlist",
                "backtest",
                "--strategy",
                str(strategy),
                "--source",
                f"jsonl:{session}",
                "--leg-latency-ms",
                "-1",
            ],
        ).exit_code
        == 2
    )
    errors = {
        ("--source", "kafka"): "error: --source 'kafka': expected synthetic[:SEED], broker[:PREFIX], db or jsonl:FILE",
        ("--source", f"jsonl:{tmp_path / 'none.jsonl'}"): "none.jsonl: cannot read: No such file or directory",
        ("--strategy", str(tmp_path / "missing.yaml")): "missing.yaml does not exist",
    }
    for (option, value), words in errors.items():
        args = {"--strategy": str(strategy), "--source": f"jsonl:{session}", option: value}
        result = runner.invoke(app, ["watchlist", "backtest", *[x for kv in args.items() for x in kv]])
        assert result.exit_code == 1 and words in result.output and result.output.count("\n") == 1, result.output
    result = runner.invoke(
        app,
        [
            "watchlist",
            "backtest",
            "--strategy",
            str(strategy),
            "--source",
            f"jsonl:{session}",
            "--instrument-rules",
            str(tmp_path / "rules.json"),
        ],
    )
    assert (
        result.exit_code == 2
        and "rules.json does not exist (write one with `tapeflow watchlist rules" in result.output
        and result.output.count("\n") == 1
    ), result.output
    result = runner.invoke(
        app, ["watchlist", "fit", "--source", f"jsonl:{session}", "--horizon", "15s", "--out", str(tmp_path / "m.json")]
    )
    assert result.exit_code == 2 and "too few to fit and test" in result.output, result.output
    result = runner.invoke(
        app, ["watchlist", "fit", "--source", f"jsonl:{session}", "--horizon", "20s", "--out", str(tmp_path / "m.json")]
    )
    assert (
        result.exit_code == 1
        and "--horizon 20s: must be a whole number of the strategy's eval_interval (15s)" in result.output
    ), result.output
    features = tmp_path / "xv.jsonl"
    features.write_text('{"topic": "xv.features", "value": {"coin": "BTC", "eval_time": 1}}\n[1, 2]\n')
    result = runner.invoke(app, ["watchlist", "fit", "--features", str(features), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 1 and "xv.jsonl:2: not an xv.features record" in result.output, result.output


def test_the_live_service_refuses_a_missing_or_repeated_strategy_in_one_line(tmp_path):
    strategy = tmp_path / "xv.yaml"
    strategy.write_text(
        "kind: watchlist\nname: xv_hand\nversion: '1'\nvenues: [binance, okx]\ntriggers: {min_net_spread_bp: 5}\n"
    )
    runner = CliRunner()
    for args, words in (
        ([str(tmp_path / "missing.yaml")], "missing.yaml does not exist"),
        ([str(strategy), str(strategy)], "strategy xv_hand 1 given twice"),
    ):
        result = runner.invoke(app, ["cross-venue", *[x for a in args for x in ("--strategy", a)]])
        assert result.exit_code == 2 and words in result.output and result.output.count("\n") == 1, result.output


def test_the_database_source_says_in_one_line_what_is_missing(tmp_path):
    strategy = tmp_path / "xv.yaml"
    strategy.write_text(
        "kind: watchlist\nname: xv_hand\nversion: '1'\nvenues: [binance, okx]\ntriggers: {min_net_spread_bp: 5}\n"
    )
    runner = CliRunner()
    env = {"TAPEFLOW_HOME": str(tmp_path / "home"), "TAPEFLOW_DATABASE_URL": None}
    for extra, words in (
        ([], "no database: the embedded stack in"),
        (["--from", "2024-01-02", "--to", "2024-01-01"], "is not before --to"),
        (["--from", "yesterday"], "--from 'yesterday': expected a date (2024-01-01)"),
    ):
        result = runner.invoke(
            app, ["watchlist", "backtest", "--strategy", str(strategy), "--source", "db", *extra], env=env
        )
        assert result.exit_code == 1 and words in result.output and result.output.count("\n") == 1, result.output
