"""`tapeflow research export --source db` and `--source topics` write the files the synthetic source writes.

A session of XRPUSDT from the synthetic generator, 2024-01-01 20:00 to 2024-01-02 01:00 UTC (the export
writes whole UTC days and reads the hour after --to for the last day's labels; the stored data begin
in the evening, as in the database of a stack started that day), is published to md.* on the real
broker (the producers' Publisher) and written to a real PostgreSQL (the sink's own table writer), as
tests/backtest/test_backtest_stored_sources.py loads them. Then the real CLI exports 2024-01-01 three
times: from the synthetic source over the same session (the reference), from the database
(TAPEFLOW_DATABASE_URL) and from the broker (TAPEFLOW_BROKER, TAPEFLOW_TOPIC_PREFIX). Each export has
the day's file and the schema file, and the files' rows are equal: the same columns in the same order
with the same Arrow types, and every value of every row (identity, decision, layer points, every
feature, labels). The stored sources replay from 00:00 through 20 empty hours, the reference from
20:00: the rows must not depend on that.

What legitimately differs is provenance, not rows: the `source` in `_schema.json` and in each file's
Parquet metadata (`synthetic:7`, `db`, `topics`), which a re-run uses to tell exports of different data
apart. Receive times differ too (the stored trades carry receive_time = trade time + 5 ms), but no
column holds them: the engine orders trades, books and marks by exchange time, and the indicators'
receive_time is stored as generated.

CPU: 0.1 trades/s and a book every 10 s over 5 hours (about 1,900 trades; the mark every second is most
of the records loaded); the call takes about 5 s on this shared 2-core machine.
"""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import backtest.sources as sources
import backtest.sources.synthetic as synthetic
from backtest.inputs import RECORD_KINDS
from backtest.research.export import METADATA_KEY
from backtest.sources.synthetic import SyntheticSource
from tests.backtest.test_backtest_stored_sources import TOPIC_OF, trade_records
from tests.support.services import database_url
from tests.support.stored_sources import store_session

pytestmark = pytest.mark.integration

DAY_TEXT = "2024-01-01"
NEXT_TEXT = "2024-01-02"  # the --to of that one day (excluded)
T1 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
DAY = 86_400_000
HOUR = 3_600_000
SYMBOL = "XRPUSDT"
RATE = 0.1  # trades/s
SEED = 7  # the export's default source, synthetic:7
SESSION_START = T1 + 20 * HOUR  # the data begin at 20:00 (a stack that started recording that evening)


def session_records() -> dict[str, list[dict]]:
    """The session's records by topic: what the reference export reads (its source opened from 20:00 to
    the end of the hour after --to)."""
    out: dict[str, list[dict]] = {"md.trades": []} | {TOPIC_OF[k]: [] for k in RECORD_KINDS}
    for block in SyntheticSource([SYMBOL], SESSION_START, T1 + DAY + HOUR, seed=SEED, trades_per_s=RATE).blocks():
        for batch in block.trades.values():
            out["md.trades"] += trade_records(batch)
        for kind in RECORD_KINDS:
            out[TOPIC_OF[kind]] += block.records[kind]
    return out


def export(tmp_path, name: str, source: str, env: dict[str, str]):
    """``tapeflow research export`` of the day through the real CLI; the day's table and the schema file."""
    from tapeflow.cli import app

    out = tmp_path / name
    result = CliRunner().invoke(
        app,
        [
            "research",
            "export",
            "--from",
            DAY_TEXT,
            "--to",
            NEXT_TEXT,
            "--symbols",
            SYMBOL,
            "--source",
            source,
            "--out",
            str(out),
            "--no-progress",
        ],
        env={"TAPEFLOW_HOME": str(tmp_path / "home"), **env},
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "export: 1 symbol-days written" in result.output and "0 without data" in result.output, result.output
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["v53/_schema.json", f"v53/date={DAY_TEXT}/{SYMBOL}.parquet"], files
    return pq.read_table(out / "v53" / f"date={DAY_TEXT}" / f"{SYMBOL}.parquet"), json.loads(
        (out / "v53" / "_schema.json").read_text()
    )


def test_export_from_the_database_and_the_topics_equals_the_synthetic_export(
    kafka_bootstrap, database, topic_prefix, tmp_path, monkeypatch
):
    monkeypatch.setattr(synthetic, "BOOK_INTERVAL_MS", 10_000)
    real_open_source = sources.open_source

    def at_low_rate(spec, symbols, from_ms, to_ms, **options):
        assert spec.startswith("synthetic")  # only the reference run reads the generator
        assert from_ms == T1 and to_ms == T1 + DAY + HOUR
        return real_open_source(spec, symbols, SESSION_START, to_ms, **{**options, "trades_per_s": RATE})

    with monkeypatch.context() as patch:
        patch.setattr(sources, "open_source", at_low_rate)
        reference, reference_schema = export(tmp_path, "synthetic", f"synthetic:{SEED}", {})
    assert reference.num_rows > 2_000
    assert pc.min(reference.column("eval_time")).value >= SESSION_START  # the data's start, not midnight
    assert reference.column("direction").null_count < reference.num_rows  # directed rows: labels to compare
    assert reference.column("y_binary_60m").drop_null().to_pylist().count(1) > 0

    records = session_records()
    assert len(records["md.trades"]) > 1_000
    store_session(kafka_bootstrap, topic_prefix, database, records)

    stored = {
        "db": {"TAPEFLOW_DATABASE_URL": database_url(database)},
        "topics": {"TAPEFLOW_BROKER": kafka_bootstrap, "TAPEFLOW_TOPIC_PREFIX": topic_prefix},
    }
    for source, env in stored.items():
        table, schema_file = export(tmp_path, source, source, env)
        # provenance names the source; the rest of the schema file is the reference's
        assert schema_file == reference_schema | {"source": source}
        assert json.loads(table.schema.metadata[METADATA_KEY]) == json.loads(
            reference.schema.metadata[METADATA_KEY]
        ) | {"source": source}
        assert table.schema.remove_metadata().equals(reference.schema.remove_metadata()), source
        assert table.num_rows == reference.num_rows, source
        differing = [name for name in reference.column_names if not table.column(name).equals(reference.column(name))]
        assert differing == [], (source, differing)
