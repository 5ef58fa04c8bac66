"""Every Kafka topic tapeflow uses, declared once: producers, stream apps, sinks, the CLI and the
bootstrap scripts all read it here instead of repeating names, partition counts and retention.

Partitions. Every topic keyed by `exchange:symbol` that the engine or the executor joins has the
same count, SYMBOL_PARTITIONS = 6, because Faust tables and joins need co-partitioned inputs (same
key, same partition count), and the executor evaluates exits on md.trades in the same process that
owns the symbol's signals and positions (one writer per position). Six divides evenly among 1, 2,
3 or 6 workers: two on a laptop, more on a server, without repartitioning, which
would re-key existing data and break per-symbol ordering. Four default symbols leave some
partitions empty; an empty partition costs next to nothing. Low-volume side topics (md.gaps,
risk.events, config.*, outcome.labels, the xv.* topics, every dlq.*) use one partition: total order and trivial consumers
matter more there (the xv.* topics are keyed by coin and written by one watchlist service each).

Retention. Market data 7 days by default (warm-up needs 24 h; the database keeps history;
``TAPEFLOW_TOPIC_RETENTION`` sets it, `md_retention_ms` below); derived topics (bars, features,
signals) 30 days; trading records (orders, fills, positions) and the watchlist's trading records are
kept (nothing deleted by age: they are small and they are the book of record); gaps, the cross-venue
features and dead letters 30 days, time to investigate. risk.events is compacted: the last event per
scope is the risk guard's durable state; so is config.rollouts, the latest rollout state per strategy,
and outcome.labels, the latest label per sample and horizon (as the table outcome_labels holds it).
config.applied (where the engine switched revisions) is kept, small and needed by every replay.

Record time. Every topic is stamped by the broker on arrival (``message.timestamp.type=LogAppendTime``),
so retention counts from when a record reached the broker, never from the event time it carries: a
recording from 2023 replayed today stays its full retention, where event-time stamps had Kafka delete
a replay's bars and features at its next retention check. Event time stays in every value (trade time,
bar start, evaluation time), which is what the engine, the sinks and the backtest range filters read;
lookups by time use Kafka's ListOffsets over arrival times: ``topics tail --from`` and ``backtest
--source topics`` then filter on event time; ``replay --from/--to`` select by arrival time and pace on
event time.

Keys are UTF-8 strings (not Avro); `symbol_key` builds the common one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from schemas.errors import UnknownTopicError

DAY_MS = 24 * 60 * 60 * 1000
SYMBOL_PARTITIONS = 6
MD_PREFIX = "md."
DLQ_PREFIX = "dlq."
DLQ_MD = "dlq.md"
DLQ_SCHEMA = "dead_letter"

CleanupPolicy = Literal["delete", "compact"]


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, what the key is made of, partitions, cleanup, and value schema.

    `key` describes the key ("exchange:symbol"); `value_schema` is the stem of the `.avsc` file in
    schemas/avro/; `retention_ms` is None when nothing is deleted by age (compacted topics, and the
    trading records, which are kept).
    """

    name: str
    key: str
    partitions: int
    cleanup_policy: CleanupPolicy
    retention_ms: int | None
    value_schema: str
    description: str

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"{self.name}: partitions must be >= 1")
        if self.retention_ms is not None and self.retention_ms <= 0:
            raise ValueError(f"{self.name}: retention_ms must be positive (None keeps records forever)")
        if self.cleanup_policy == "compact" and self.retention_ms is not None:
            raise ValueError(
                f"{self.name}: a compacted topic keeps the latest value per key; retention_ms must be None"
            )

    @property
    def value_subject(self) -> str:
        """Schema Registry subject of the value (Confluent TopicNameStrategy)."""
        return f"{self.name}-value"

    @property
    def is_dlq(self) -> bool:
        return self.name.startswith(DLQ_PREFIX)


def _symbol_topic(name: str, retention_days: int | None, schema: str, description: str) -> TopicSpec:
    """``retention_days`` None: kept."""
    retention = None if retention_days is None else retention_days * DAY_MS
    return TopicSpec(name, "exchange:symbol", SYMBOL_PARTITIONS, "delete", retention, schema, description)


_PRIMARY: tuple[TopicSpec, ...] = (
    _symbol_topic("md.trades", 7, "trade", "Aggregated trades, agg_id-continuous per symbol."),
    _symbol_topic("md.depth", 7, "depth_diff", "Verified order-book diffs (U/u/pu chained)."),
    _symbol_topic("md.book", 7, "book_snapshot", "Top-N book snapshots with OBI over 10 levels."),
    _symbol_topic("md.liquidations", 7, "liquidation", "Forced liquidation orders."),
    _symbol_topic("md.mark", 7, "mark_price", "Mark/index price and funding rate."),
    _symbol_topic("md.indicators", 7, "market_indicator", "Polled indicators: OI, long/short ratios, premiums."),
    _symbol_topic(
        "md.progress",
        7,
        "progress_marker",
        "Progress markers of replays and warm starts: per key, md.* complete up to an event time.",
    ),
    TopicSpec(
        "md.gaps",
        "exchange:symbol",
        1,
        "delete",
        30 * DAY_MS,
        "data_gap",
        "Market-data holes that could not be filled.",
    ),
    _symbol_topic("bars.1m", 30, "bar", "Closed 1-minute OHLCV bars with taker buy/sell volume."),
    _symbol_topic("features", 30, "feature_evaluation", "Every strategy evaluation with its factor breakdown."),
    _symbol_topic("signals", 30, "signal", "Trade signals with exit plan and provenance."),
    _symbol_topic("orders", None, "order_event", "Order state transitions (paper, testnet, live)."),
    _symbol_topic("fills", None, "fill", "Order executions."),
    _symbol_topic("positions", None, "position_event", "Position lifecycle events with P&L in R."),
    TopicSpec(
        "risk.events",
        "scope",
        1,
        "compact",
        None,
        "risk_event",
        "Risk-guard decisions; compacted to the latest state per scope.",
    ),
    TopicSpec(
        "config.rollouts",
        "strategy",
        1,
        "compact",
        None,
        "rollout_state",
        "Each strategy's rollout state (active and canary revisions); compacted to the latest per strategy.",
    ),
    TopicSpec(
        "config.applied",
        "strategy:exchange:symbol",
        1,
        "delete",
        None,
        "config_applied",
        "Where the engine switched a strategy's revision per symbol (kept: a replay switches at the same points).",
    ),
    TopicSpec(
        "outcome.labels",
        "source:sample_kind:sample_id:horizon_h",
        1,
        "compact",
        None,
        "outcome_label",
        "Outcome labels of signals and trades (review.labels; the rows of outcome_labels); compacted to the "
        "latest per sample and horizon.",
    ),
    TopicSpec(
        "xv.features",
        "coin",
        1,
        "delete",
        30 * DAY_MS,
        "cross_venue_feature",
        "Cross-venue features per coin and ordered venue pair (the watchlist service).",
    ),
    TopicSpec(
        "xv.signals",
        "coin",
        1,
        "delete",
        None,
        "watchlist_signal",
        "Watchlist signals and rejected candidates per coin and ordered venue pair.",
    ),
    TopicSpec(
        "xv.orders",
        "coin",
        1,
        "delete",
        None,
        "watchlist_leg_order",
        "Leg orders of hedged pairs (entry, exit, unwind) and their outcome.",
    ),
    TopicSpec(
        "xv.funding",
        "coin",
        1,
        "delete",
        None,
        "watchlist_funding_payment",
        "Funding paid or received by the legs of hedged pairs.",
    ),
    TopicSpec(
        "xv.pairs",
        "coin",
        1,
        "delete",
        None,
        "watchlist_pair_event",
        "Hedged pair state after each change (seq per pair), with P&L per pair and leg.",
    ),
    TopicSpec(
        "xv.commands",
        "coin",
        1,
        "delete",
        None,
        "watchlist_command",
        "Operator commands to the watchlist traders (open or close a hedged pair) and their answers.",
    ),
)

TOPICS: Mapping[str, TopicSpec] = MappingProxyType({t.name: t for t in _PRIMARY})

# The engine's inputs and the field each is ordered by in event time (trade time for trades and
# liquidations, exchange event time for book and mark, receive time for polled indicators). Progress
# markers (md.progress) speak about exactly these topics.
ENGINE_INPUT_TIME: Mapping[str, str] = MappingProxyType(
    {
        "md.trades": "trade_time",
        "md.book": "event_time",
        "md.mark": "event_time",
        "md.liquidations": "trade_time",
        "md.indicators": "receive_time",
    }
)
ENGINE_INPUTS: tuple[str, ...] = tuple(ENGINE_INPUT_TIME)
PROGRESS_TOPIC = "md.progress"


def _dlq_spec(name: str, sources: str) -> TopicSpec:
    return TopicSpec(
        name,
        "source key",
        1,
        "delete",
        30 * DAY_MS,
        DLQ_SCHEMA,
        f"Dead letters of {sources}: raw bytes plus the error.",
    )


DLQ_TOPICS: Mapping[str, TopicSpec] = MappingProxyType(
    {DLQ_MD: _dlq_spec(DLQ_MD, "every md.* topic")}
    | {
        DLQ_PREFIX + t.name: _dlq_spec(DLQ_PREFIX + t.name, t.name)
        for t in _PRIMARY
        if not t.name.startswith(MD_PREFIX)
    }
)


def all_topics() -> tuple[TopicSpec, ...]:
    """Every topic to create: the primary topics, then the dead-letter topics."""
    return tuple(TOPICS.values()) + tuple(DLQ_TOPICS.values())


def topic(name: str) -> TopicSpec:
    """The spec of `name` (primary or dead-letter topic); UnknownTopicError lists the valid names."""
    spec = TOPICS.get(name) or DLQ_TOPICS.get(name)
    if spec is None:
        raise UnknownTopicError(name, [t.name for t in all_topics()])
    return spec


def dlq_topic(name: str) -> str:
    """The dead-letter topic for records of topic `name`: dlq.md for every md.* topic, else dlq.<name>."""
    spec = topic(name)
    if spec.is_dlq:
        raise ValueError(f"{name} is a dead-letter topic; dead letters are not dead-lettered again")
    return DLQ_MD if name.startswith(MD_PREFIX) else DLQ_PREFIX + name


#: the longest a segment stays open: retention deletes whole segments, so a record lives at most its
#: retention plus this (Kafka's default, 7 days, would keep market data for up to 14)
SEGMENT_MS = DAY_MS


#: md.* topics that describe the market data rather than carry it: kept at least as long as the
#: catalogue says (a gap report outlives the trades around it, to be investigated), longer when the
#: market data is kept longer
OUTLIVES_MARKET_DATA = frozenset({"md.gaps"})


def retention_ms(spec: TopicSpec, md_retention_ms: int | None = None) -> int | None:
    """How long records of `spec` are kept (None: forever): the catalogue's, or for market data
    (md.*) ``md_retention_ms`` when given (the stack's ``TAPEFLOW_TOPIC_RETENTION``; 0 = forever)."""
    if md_retention_ms is not None and spec.name.startswith(MD_PREFIX) and spec.cleanup_policy == "delete":
        if spec.name in OUTLIVES_MARKET_DATA and md_retention_ms and spec.retention_ms is not None:
            return max(md_retention_ms, spec.retention_ms)
        return md_retention_ms or None
    return spec.retention_ms


def topic_configs(spec: TopicSpec, md_retention_ms: int | None = None) -> dict[str, str]:
    """Kafka topic-level configs for `spec`, as the strings AdminClient/NewTopic expect."""
    configs = {"cleanup.policy": spec.cleanup_policy, "message.timestamp.type": "LogAppendTime"}
    if spec.cleanup_policy == "delete":
        kept = retention_ms(spec, md_retention_ms)
        configs["retention.ms"] = str(kept if kept is not None else -1)
        configs["segment.ms"] = str(min(SEGMENT_MS, kept) if kept is not None else SEGMENT_MS)
    return configs


def market_key(exchange: str, symbol: str) -> str:
    """The `exchange:symbol` key, e.g. "binance:BTCUSDT": the one key of market data, state and signals."""
    return f"{exchange}:{symbol}"


def symbol_key(exchange: str, symbol: str) -> bytes:
    """The `exchange:symbol` key as UTF-8 bytes, e.g. b"binance:BTCUSDT"."""
    return market_key(exchange, symbol).encode()
