"""The OKX producer end to end: fake OKX exchange → producer → real broker → decoded topics.

Expected values are rebuilt here from the session's raw pushes with plain dicts and Decimal (books in
contracts × ctVal, merged mark/index/funding, trade rows), independently of the producer's code.
Checks what a user relies on: every trade once and in order with consecutive ids and base-coin sizes,
a verified book through heartbeats and a sequence reset, a lost book update recovered from a REST
snapshot, a lost trade push reported on md.gaps with the exact OKX ids, mark and funding normalised.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from fake_exchange.okx import OkxSyntheticSpec, generate_okx_session, serve_okx
from producers.metrics import ProducerMetrics
from producers.okx.producer import OkxProducer, OkxProducerConfig
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.publisher import Publisher
from tests.producers.bybit.test_bybit_producer import read_topics, sample
from tests.support.staging import until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
INST = {"BTCUSDT": "BTC-USDT-SWAP", "ETHUSDT": "ETH-USDT-SWAP"}


async def run_producer(
    bootstrap,
    prefix,
    session,
    *,
    during=None,
    faults=None,
    speed=10.0,
    rest_give_up_after_s=60.0,
    spot_interval_ms=60_000,
):
    ensure_topics(bootstrap, prefix=prefix)  # returns once the broker hosts every partition (wait_hosted)
    fake = await serve_okx(session, speed=speed, faults=faults or {})
    metrics = ProducerMetrics()
    publisher = Publisher(bootstrap, AvroSerde(FileSchemaRegistry(), strict=True), metrics, topic_prefix=prefix)
    config = OkxProducerConfig(
        symbols=SYMBOLS,
        ws_url=fake.public_url,
        rest_url=fake.rest_url,
        book_interval_ms=0,
        replay_control_url=fake.rest_url,
        stream_config={"ping_interval_s": 0.2},
        rest_give_up_after_s=rest_give_up_after_s,
        spot_interval_ms=spot_interval_ms,
    )
    producer = OkxProducer(config, publisher, metrics)
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(producer.run(stop))
        if during is not None:
            await during(fake, producer)
        ended = await asyncio.wait_for(task, 60)
    finally:
        stop.set()
        await fake.stop()
    return producer, metrics, ended, publisher, fake


def read_all_delivered(bootstrap, prefix, producer, publisher):
    """The md topics read back, after checking the transport: nothing left undelivered when the run
    ended, and per topic exactly as many records as the broker acknowledged to the publisher. A
    record missing below is then told apart from one never acknowledged (``undelivered``) and from
    one acknowledged but not read back (the topic's count); the drop test once missed the first
    md.depth record of a symbol, and under load two md.book records and a dead letter went so."""
    assert producer.undelivered == 0, f"{producer.undelivered} records not acknowledged when the run ended"
    records = read_topics(bootstrap, prefix)
    acked = {t[len(prefix) :]: n for t, n in publisher.delivered_by_topic.items()}
    assert {t: len(records[t]) for t in acked if t in records} == {t: n for t, n in acked.items() if t in records}, (
        "acknowledged by the broker, not read back"
    )
    return records


def pushes(session, channel, inst_id):
    return [json.loads(f.data) for f in session.frames if f.stream == f"{channel}:{inst_id}"]


def books_by_seq(session, symbol):
    """{seqId: (bids, asks)} in base coin ({Decimal price: Decimal qty}) after the snapshot and every update."""
    st = session.initial[symbol]
    ct = Decimal(st.ct_val)
    bids = {Decimal(p): Decimal(q) * ct for p, q in st.bids.items()}
    asks = {Decimal(p): Decimal(q) * ct for p, q in st.asks.items()}
    out = {st.seq_id: (dict(bids), dict(asks))}
    for msg in pushes(session, "books", st.inst_id):
        row = msg["data"][0]
        for side, levels in ((bids, row["bids"]), (asks, row["asks"])):
            for p, q, *_ in levels:
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = Decimal(q) * ct
        out[row["seqId"]] = (dict(bids), dict(asks))
    return out


def check_depth_and_books(records, books, symbol):
    """md.depth chains and rebuilds the exchange's book exactly; every md.book is that book's top 20."""
    depth = [r for r in records["md.depth"] if r["symbol"] == symbol]
    assert depth and depth[0]["prev_final_update_id"] is None
    bids, asks, last = {}, {}, None
    for r in depth:
        assert r["exchange"] == "okx" and r["key"] == f"okx:{symbol}"
        if r["prev_final_update_id"] is None:
            bids, asks = {}, {}
        else:
            assert r["prev_final_update_id"] == last
        for side, levels in ((bids, r["bids"]), (asks, r["asks"])):
            for lvl in levels:
                if lvl["qty"] == 0:
                    side.pop(Decimal(str(lvl["price"])), None)
                else:
                    side[Decimal(str(lvl["price"]))] = Decimal(str(lvl["qty"]))
        last = r["final_update_id"]
        want_bids, want_asks = books[last]
        assert (bids, asks) == (
            {p: Decimal(str(float(q))) for p, q in want_bids.items()},
            {p: Decimal(str(float(q))) for p, q in want_asks.items()},
        ), f"{symbol} seqId={last}"
    published = [b for b in records["md.book"] if b["symbol"] == symbol]
    assert len(published) == len(depth)  # book_interval_ms=0: one md.book per verified update
    for b in published:
        want_bids, want_asks = books[b["last_update_id"]]
        top_b = sorted(want_bids.items(), reverse=True)[:20]
        top_a = sorted(want_asks.items())[:20]
        assert [(x["price"], x["qty"]) for x in b["bids"]] == [(float(p), float(q)) for p, q in top_b]
        assert [(x["price"], x["qty"]) for x in b["asks"]] == [(float(p), float(q)) for p, q in top_a]
    return depth


def expected_trades(session, symbol):
    ct = Decimal(session.initial[symbol].ct_val)
    return [
        (
            int(r["tradeId"]) - int(r["count"]) + 1,
            int(r["tradeId"]),
            float(Decimal(r["px"])),
            float(Decimal(r["sz"]) * ct),
            int(r["ts"]),
            r["side"].upper(),
        )
        for m in pushes(session, "trades", INST[symbol])
        for r in m["data"]
    ]


def expected_fills(session, symbol):
    """{OKX trade id: the fill as `mine` shows it}: what GET history-trades gives for each id."""
    ct = Decimal(session.initial[symbol].ct_val)
    return {
        int(f["tradeId"]): (
            int(f["tradeId"]),
            int(f["tradeId"]),
            float(Decimal(f["px"])),
            float(Decimal(f["sz"]) * ct),
            int(f["ts"]),
            f["side"].upper(),
        )
        for f in session.fills[INST[symbol]]
    }


def mine(trades):
    return [
        (t["first_trade_id"], t["last_trade_id"], t["price"], t["qty"], t["trade_time"], t["taker_side"])
        for t in trades
    ]


def expected_marks_and_funding(session, symbol):
    st = session.initial[symbol]
    state = {
        "mark": st.mark["markPx"],
        "index": st.index["idxPx"],
        "rate": st.funding["fundingRate"],
        "time": st.funding["fundingTime"],
    }
    # subscribing pushes the current mark, funding and index: the first record holds those
    marks = [(float(state["mark"]), float(state["index"]), float(state["rate"]), int(state["time"]))]
    funding = [(st.funding["fundingRate"], st.funding["fundingTime"], st.funding["nextFundingTime"])]
    for f in session.frames:
        channel, inst = f.stream.split(":")
        row = json.loads(f.data)["data"][0]
        if inst not in (st.inst_id, st.index_id) or channel not in ("mark-price", "index-tickers", "funding-rate"):
            continue
        if channel == "mark-price":
            state["mark"] = row["markPx"]
        elif channel == "index-tickers":
            state["index"] = row["idxPx"]
        else:
            state["rate"], state["time"] = row["fundingRate"], row["fundingTime"]
            key = (row["fundingRate"], row["fundingTime"], row["nextFundingTime"])
            if key != funding[-1]:
                funding.append(key)
        mark = (float(state["mark"]), float(state["index"]), float(state["rate"]), int(state["time"]))
        if marks[-1] != mark:
            marks.append(mark)
    return marks, [(float(r), float(t), float(n) - float(t)) for r, t, n in funding]


def expected_divergence(session, symbol):
    """(mark, spot mid) at every spot ticker (the one pushed on subscribe first), mark as last pushed."""
    st = session.initial[symbol]
    mark = float(st.mark["markPx"])
    out = [(mark, (float(st.spot["bidPx"]) + float(st.spot["askPx"])) / 2)]
    for f in session.frames:
        if f.stream == f"mark-price:{st.inst_id}":
            mark = float(json.loads(f.data)["data"][0]["markPx"])
        elif f.stream == f"tickers:{st.index_id}":
            row = json.loads(f.data)["data"][0]
            out.append((mark, (float(row["bidPx"]) + float(row["askPx"])) / 2))
    return out


async def test_every_trade_once_in_base_coin_verified_book_through_heartbeats_and_a_reset_mark_and_funding(
    kafka_bootstrap, topic_prefix
):
    session = generate_okx_session(
        OkxSyntheticSpec(
            seed=31, symbols=tuple(SYMBOLS), duration_s=10, trades_per_s=8, reset_at_s=6, heartbeat_probability=0.1
        )
    )
    producer, metrics, ended, publisher, _ = await run_producer(
        kafka_bootstrap, topic_prefix, session, spot_interval_ms=0
    )
    assert ended == "replay-finished" and publisher.healthy
    assert producer.stream.pongs >= 2  # the text ping was sent and answered
    records = read_all_delivered(kafka_bootstrap, topic_prefix, producer, publisher)
    assert records["dlq.md"] == [], records["dlq.md"]  # first: a refused frame explains a missing record below
    for sym in SYMBOLS:
        want = expected_trades(session, sym)
        got = [t for t in records["md.trades"] if t["symbol"] == sym]
        assert len(got) == len(want) > 50
        first = want[0][4] * 1000
        assert [t["agg_id"] for t in got] == list(range(first, first + len(want)))  # once, in order, no hole
        assert mine(got) == want
        assert all(t["key"] == f"okx:{sym}" and t["event_time"] == t["trade_time"] for t in got)
        check_depth_and_books(records, books_by_seq(session, sym), sym)
        assert producer.books[sym].sequence_resets == 1 and producer.books[sym].heartbeats > 0
        marks, funding = expected_marks_and_funding(session, sym)
        got_marks = [
            (m["mark_price"], m["index_price"], m["funding_rate"], m["next_funding_time"])
            for m in records["md.mark"]
            if m["symbol"] == sym
        ]
        assert got_marks == marks and len(marks) > 3
        indicators = [i for i in records["md.indicators"] if i["symbol"] == sym]
        got_funding = [
            (i["value"], i["extra"]["next_funding_time"], i["extra"]["funding_interval_ms"])
            for i in indicators
            if i["kind"] == "funding_rate"
        ]
        # seen once in CI: the first two funding records missing while the marks carrying their rates were
        # all there; the whole md.indicators partition of the symbol says more next time
        assert got_funding == funding, (sym, funding, [(i["kind"], i["value"], i["event_time"]) for i in indicators])
        divergence = [i for i in indicators if i["kind"] == "spot_perp_divergence"]
        assert [(i["extra"]["perp_price"], i["extra"]["spot_price"]) for i in divergence] == expected_divergence(
            session, sym
        )
        assert all(
            i["value"] == (i["extra"]["perp_price"] - i["extra"]["spot_price"]) / i["extra"]["spot_price"]
            for i in divergence
        )
        assert {i["kind"] for i in indicators} == {"funding_rate", "spot_perp_divergence"}
    assert records["md.gaps"] == [] and records["dlq.md"] == []
    assert sample(metrics, "tapeflow_producer_book_resyncs_total") == 0
    assert producer.health()["books_live"] == 2


async def test_lost_pushes_are_repaired_from_rest_the_book_by_snapshot_the_trades_by_id(kafka_bootstrap, topic_prefix):
    session = generate_okx_session(OkxSyntheticSpec(seed=32, symbols=tuple(SYMBOLS), duration_s=10, trades_per_s=8))
    # staged on the fake's frame positions, the replay held at each, so a loaded machine can neither end
    # the session before a fault is armed nor arm it late (polling the position once found no ETH push
    # lost: at 8x the replay had run past the second point, and nearly to its end, before the poll)
    first_hold = session.frames[len(session.frames) // 5].index
    second_hold = session.frames[len(session.frames) // 2].index

    async def during(fake, producer):
        fake.pause_replay(before=first_hold)
        await until(lambda: not fake.state.running.is_set() and producer.books["BTCUSDT"].is_live, timeout_s=30.0)
        fake.set_faults(skip_frames=2, skip_stream="books:BTC-USDT-SWAP")
        fake.pause_replay(before=second_hold)
        fake.resume_replay()
        await until(lambda: not fake.state.running.is_set(), timeout_s=30.0)
        fake.set_faults(skip_frames=1, skip_stream="trades:ETH-USDT-SWAP")
        fake.resume_replay()

    producer, metrics, ended, publisher, fake = await run_producer(
        kafka_bootstrap, topic_prefix, session, during=during, speed=8.0
    )
    assert ended == "replay-finished" and publisher.healthy
    records = read_all_delivered(kafka_bootstrap, topic_prefix, producer, publisher)

    # the book: a broken chain, one REST snapshot spliced in, and never an unverified book published
    assert sample(metrics, "tapeflow_producer_book_resyncs_total", symbol="BTCUSDT", reason="prevSeqId") == 1
    depth = check_depth_and_books(records, books_by_seq(session, "BTCUSDT"), "BTCUSDT")
    assert sum(r["prev_final_update_id"] is None for r in depth) == 2  # the subscription's snapshot and the REST one
    check_depth_and_books(records, books_by_seq(session, "ETHUSDT"), "ETHUSDT")
    assert producer.health()["books_live"] == 2

    # the trades: BTC whole; ETH whole with the lost push replaced by its fills from REST, agg ids consecutive
    assert mine([t for t in records["md.trades"] if t["symbol"] == "BTCUSDT"]) == expected_trades(session, "BTCUSDT")
    want = expected_trades(session, "ETHUSDT")
    got = [t for t in records["md.trades"] if t["symbol"] == "ETHUSDT"]
    lost_pushes = [w for w in want if w not in mine(got)]
    assert len(lost_pushes) == 1, f"one ETH push lost and repaired, not {len(lost_pushes)}"
    (lost,) = lost_pushes
    fills = expected_fills(session, "ETHUSDT")
    assert mine(got) == [
        r for w in want for r in ([fills[i] for i in range(lost[0], lost[1] + 1)] if w == lost else [w])
    ]
    assert [t["agg_id"] for t in got] == list(range(got[0]["agg_id"], got[0]["agg_id"] + len(got)))
    assert check_trades_and_gaps(records, session, "ETHUSDT") == []
    # md.gaps holds the book's break only (stream md.depth), after the last sequence id the book applied
    (resync,) = records["md.gaps"]
    assert resync["stream"] == "md.depth" and resync["symbol"] == "BTCUSDT"
    assert resync["reason"].startswith("resync: prevSeqId=") and resync["from_id"] == resync["to_id"]
    assert sample(metrics, "tapeflow_producer_gaps_filled_total") == 1
    assert sample(metrics, "tapeflow_producer_gaps_unfilled_total") == 0 and records["dlq.md"] == []


def check_trades_and_gaps(records, session, symbol):
    """What md.trades holds is the session's trades, once and in order: each record is a pushed row or
    (a hole filled from REST) one of its fills; OKX ids run on without a break from the session's first
    to its last except where the agg ids jump, exactly where md.gaps says, over as many ids as are missing."""
    rows = {(w[0], w[1]): w for w in expected_trades(session, symbol)}
    fills = expected_fills(session, symbol)
    got = [t for t in records["md.trades"] if t["symbol"] == symbol]
    for t in mine(got):
        assert t == rows.get((t[0], t[1])) or (t[0] == t[1] and t == fills[t[0]]), t
    assert got[0]["first_trade_id"] == min(fills) and got[-1]["last_trade_id"] == max(fills)
    gaps = [g for g in records["md.gaps"] if g["symbol"] == symbol and g["stream"] == "md.trades"]
    jumps = []
    for a, b in zip(got, got[1:]):
        if b["agg_id"] == a["agg_id"] + 1:
            assert b["first_trade_id"] == a["last_trade_id"] + 1
            continue
        okx_from, okx_to = a["last_trade_id"] + 1, b["first_trade_id"] - 1
        assert okx_to >= okx_from and b["agg_id"] - a["agg_id"] - 2 == okx_to - okx_from
        jumps.append((a["agg_id"] + 1, b["agg_id"] - 1, f"OKX trade ids {okx_from}..{okx_to} "))
    assert [(g["from_id"], g["to_id"]) for g in gaps] == [j[:2] for j in jumps]
    assert all(j[2] in g["reason"] for g, j in zip(gaps, jumps))
    return gaps


async def test_with_rest_down_a_lost_push_is_reported_a_dropped_connection_resubscribes_garbage_is_dead_lettered(
    kafka_bootstrap, topic_prefix
):
    session = generate_okx_session(OkxSyntheticSpec(seed=33, symbols=tuple(SYMBOLS), duration_s=10, trades_per_s=8))
    # staged on frame positions, the replay held at each (see the test above)
    lose_at = session.frames[len(session.frames) * 3 // 10].index
    drop_at = session.frames[len(session.frames) // 2].index

    async def during(fake, producer):
        fake.pause_replay(before=lose_at)
        await until(
            lambda: producer.books["ETHUSDT"].is_live, timeout_s=30.0
        )  # subscribed: the instruments were loaded
        fake.set_faults(rest_fail_for_s=60.0)  # from here REST answers 503: no hole can be filled
        await until(lambda: not fake.state.running.is_set(), timeout_s=30.0)
        fake.set_faults(skip_frames=1, skip_stream="trades:ETH-USDT-SWAP")
        fake.pause_replay(before=drop_at)
        fake.resume_replay()
        await until(lambda: not fake.state.running.is_set(), timeout_s=30.0)
        # the drop with the session standing still until the producer is back with both books live
        # from the new connection's snapshots: on a loaded machine the rest of the replay could
        # otherwise end before them (the same race failed the Bybit drop test in CI)
        fake.set_faults(drop_mode="abort")
        fake.drop_connections()
        await until(
            lambda: (
                sample(producer.metrics, "tapeflow_producer_reconnects_total") >= 1
                and all(book.is_live for book in producer.books.values())
            ),
            timeout_s=30.0,
        )
        fake.resume_replay()

    producer, metrics, ended, publisher, fake = await run_producer(
        kafka_bootstrap, topic_prefix, session, during=during, faults={"garbage_every": 37}, rest_give_up_after_s=1.0
    )
    assert ended == "replay-finished" and publisher.healthy
    records = read_all_delivered(kafka_bootstrap, topic_prefix, producer, publisher)
    assert sample(metrics, "tapeflow_producer_reconnects_total") >= 1
    for sym in SYMBOLS:  # the new connection's snapshot rebuilt the book: never an unverified one published
        depth = check_depth_and_books(records, books_by_seq(session, sym), sym)
        assert sum(r["prev_final_update_id"] is None for r in depth) >= 2
        gaps = check_trades_and_gaps(records, session, sym)  # once, in order; every jump a reported hole
        assert all("could not fill" in g["reason"] for g in gaps)
    assert [g for g in records["md.gaps"] if g["symbol"] == "ETHUSDT"]  # at least the skipped push
    assert producer.gaps_filled == 0 and sample(metrics, "tapeflow_producer_gaps_unfilled_total") == len(
        records["md.gaps"]
    )
    assert producer.health()["books_live"] == 2
    assert sample(metrics, "tapeflow_producer_book_resyncs_total") == 0  # a reconnect is not a broken chain
    dlq = records["dlq.md"]
    assert dlq and len(dlq) == sample(metrics, "tapeflow_producer_dlq_messages_total") <= fake.state.garbage_sent
    reasons = " | ".join(d["error"] for d in dlq)
    assert "not JSON" in reasons and "unexpected frame shape" in reasons


async def test_cli_produce_exchange_okx_runs_against_the_fake(kafka_bootstrap, topic_prefix, read_topic, tmp_path):
    """`tapeflow produce --exchange okx` as a user runs it, pointed at the fake OKX server; one of the
    symbols (SOLUSDT) is not listed there: it is said and left out, the others stream."""
    import os
    import sys

    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    session = generate_okx_session(OkxSyntheticSpec(seed=5, symbols=("BTCUSDT",), duration_s=4))
    fake = await serve_okx(session, speed=10.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(
        TAPEFLOW_BROKER=kafka_bootstrap,
        TAPEFLOW_TOPIC_PREFIX=topic_prefix,
        TAPEFLOW_HOME=str(tmp_path),
        TAPEFLOW_SYMBOLS="BTCUSDT,SOLUSDT",
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tapeflow",
            "produce",
            "--exchange",
            "okx",
            "--okx-ws-url",
            fake.public_url,
            "--okx-rest-url",
            fake.rest_url,
            "--replay-control-url",
            fake.rest_url,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        await fake.stop()
    assert proc.returncode == 0, out.decode()[-2000:]
    assert b"replay-finished" in out and b"SOL-USDT-SWAP" in out
    trades = [r["value"] for r in read_topic(kafka_bootstrap, topic_prefix + "md.trades", idle_s=1)]
    assert mine(trades) == expected_trades(session, "BTCUSDT")
    assert all(t["exchange"] == "okx" and t["symbol"] == "BTCUSDT" for t in trades)
