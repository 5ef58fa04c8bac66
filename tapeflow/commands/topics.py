"""Kafka topics: `topics list|describe|lag|create|tail`."""

from __future__ import annotations

import time

import orjson
import typer

from tapeflow.commands._common import (
    bootstrap_address,
    echo,
    fail,
    state,
    topics_app,
)


@topics_app.command("list")
def topics_list(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Topics on the broker with partitions and record counts; catalogue topics are marked."""
    from schemas.catalogue import all_topics
    from tapeflow_runtime.kafka_client import admin_client, describe_topics

    settings = state.settings()
    bootstrap = bootstrap_address()
    names = sorted(t for t in admin_client(bootstrap).list_topics(timeout=10).topics if not t.startswith("__"))
    catalogue = {settings.topic_prefix + t.name for t in all_topics()}
    rows = [{**r, "catalogue": r["topic"] in catalogue} for r in describe_topics(bootstrap, names) if r.get("exists")]
    if json_out:
        for r in rows:
            typer.echo(orjson.dumps(r).decode())
        return
    echo(f"{'TOPIC':<32}{'PARTS':>6}{'RECORDS':>12}  CATALOGUE")
    for r in rows:
        echo(
            f"{r['topic']:<32}{len(r.get('partitions', [])):>6}{r.get('messages', 0):>12}  "
            f"{'yes' if r['catalogue'] else 'no'}"
        )
    missing = sorted(catalogue - {r["topic"] for r in rows})
    if missing:
        echo(f"\n{len(missing)} catalogue topic(s) missing: {', '.join(missing)} (run `tapeflow topics create`)")


@topics_app.command("describe")
def topics_describe(
    topics: list[str] = typer.Argument(None, help="Topic names (default: every catalogue topic)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Partitions, offsets (the last stable offset where a transaction is open), retention, first and last
    record time, configuration, catalogue entry (key, schema) and the consumer groups reading each topic
    with their lag. Record times are the broker's
    arrival stamps (LogAppendTime): the first is the oldest record retention has kept."""
    from schemas.catalogue import all_topics
    from tapeflow.topic_groups import groups_lag
    from tapeflow.topic_times import format_ms, format_retention, topic_spans
    from tapeflow_runtime.kafka_client import describe_topics

    settings = state.settings()
    base = settings.topic_prefix
    by_name = {t.name: t for t in all_topics()}
    wanted = list(topics) if topics else sorted(by_name)
    # a catalogue name gets the prefix; a full name (prefixed, or not in the catalogue) is taken as it is
    names = [n if n not in by_name else base + n for n in wanted]
    bootstrap = bootstrap_address()
    rows = describe_topics(bootstrap, names)
    spans = topic_spans(bootstrap, [r["topic"] for r in rows if r.get("exists")])
    groups = groups_lag(bootstrap, prefix=base)
    for row in rows:
        name = row["topic"][len(base) :] if row["topic"].startswith(base) else row["topic"]
        spec = by_name.get(name)
        row["catalogue"] = (
            None
            if spec is None
            else {
                "key": spec.key,
                "partitions": spec.partitions,
                "cleanup_policy": spec.cleanup_policy,
                "retention_ms": spec.retention_ms,
                "value_schema": spec.value_schema,
                "description": spec.description,
            }
        )
        if not row["exists"]:
            continue
        span = spans.get(row["topic"])
        row["first_record_ms"] = span.first_ms if span else None
        row["last_record_ms"] = span.last_ms if span else None
        readers = [g.on_topic(row["topic"]) for g in groups]
        row["groups"] = [g.as_dict() for g in readers if g.partitions]
    if json_out:
        for r in rows:
            typer.echo(orjson.dumps(r).decode())
        raise typer.Exit(0 if all(r["exists"] for r in rows) else 1)
    for r in rows:
        echo(f"{r['topic']}")
        if not r["exists"]:
            echo("  does not exist")
            continue
        if r["catalogue"]:
            c = r["catalogue"]
            echo(f"  {c['description']}")
            echo(f"  key {c['key']}, value schema {c['value_schema']}, cleanup {c['cleanup_policy']}")
        config = r.get("config", {})
        echo(
            f"  retention {format_retention(config.get('retention.ms'))}, {r['messages']} record(s), "
            f"first {format_ms(r['first_record_ms'])}, last {format_ms(r['last_record_ms'])}"
        )
        echo(f"  config {config}")
        for p in r["partitions"]:
            stable = f", last stable {p['last_stable']}: a transaction is open" if p["open_transaction"] else ""
            echo(f"  partition {p['partition']}: leader {p['leader']}, offsets {p['low']}..{p['high']}{stable}")
        open_tx = sum(p["open_transaction"] for p in r["partitions"])
        if open_tx:
            echo(f"  {open_tx} partition(s) with an open transaction: read-committed readers stop at its start")
        for g in r["groups"]:
            lags = ", ".join(f"{p['partition']}:{p['lag']}" for p in g["partitions"])
            echo(f"  group {g['group']} ({g['state']}, {g['members']} members): lag {g['total_lag']} ({lags})")
        if not r["groups"]:
            echo("  no consumer group has committed offsets here")
    raise typer.Exit(0 if all(r["exists"] for r in rows) else 1)


def _ui_consumer_lag(settings, paths):
    """The UI's consumer-lag source: ``topics lag --json``'s groups of this deployment (the broker
    resolved on each call, so a stack started after the UI is found)."""
    from tapeflow.topic_groups import groups_lag
    from tapeflow_runtime.endpoints import resolve_broker

    return lambda: [g.as_dict() for g in groups_lag(resolve_broker(settings, paths), prefix=settings.topic_prefix)]


@topics_app.command("lag")
def topics_lag(
    group: str | None = typer.Argument(None, help="Consumer group (default: every group of this topic prefix)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per group."),
) -> None:
    """Consumer lag per partition and in total: end offset minus the group's committed offset.

    Read from the broker's admin API: it never joins the group."""
    from tapeflow.topic_groups import groups_lag, render

    settings = state.settings()
    groups = groups_lag(bootstrap_address(), group, prefix=settings.topic_prefix)
    if json_out:
        for g in groups:
            typer.echo(orjson.dumps(g.as_dict()).decode())
        return
    if not groups:
        echo("no consumer groups")
        return
    render(groups, echo)


@topics_app.command("create")
def topics_create() -> None:
    """Create every catalogue topic that is missing (idempotent; existing topics are left alone)."""
    from tapeflow_runtime.kafka_client import ensure_topics

    settings = state.settings()
    results = ensure_topics(
        bootstrap_address(), prefix=settings.topic_prefix, md_retention_ms=settings.topic_retention_ms()
    )
    for r in results:
        echo(f"{r.name:<32}{r.action}{': ' + r.detail if r.detail else ''}")
    created = sum(r.action == "created" for r in results)
    echo(f"{created} created, {len(results) - created} already present")
    raise typer.Exit(1 if any(r.action == "mismatch" for r in results) else 0)


@topics_app.command("tail")
def topics_tail(
    topic: str = typer.Argument(..., help="Topic to read (catalogue name; the prefix is applied)."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record."),
    from_time: str | None = typer.Option(
        None,
        "--from",
        help="Start at the first record at or after this time: a duration back from now "
        "(10m, 2h, 1d) or ISO-8601 (2024-01-01T12:00:00Z; no zone = UTC).",
    ),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep waiting for new records after the end (always so when starting from the end, the default).",
    ),
    max_records: int | None = typer.Option(None, "--max", min=1, help="Stop after N records."),
    timeout: float | None = typer.Option(None, "--timeout", min=0.1, help="Stop after S seconds without a new record."),
    symbol: str | None = typer.Option(None, "--symbol", help="Only records for this symbol."),
    key: str | None = typer.Option(None, "--key", help="Only records with exactly this key (e.g. binance:BTCUSDT)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Print decoded records of a topic (kcat-like, schema-aware).

    Starts at the end (new records only, following) unless --from-beginning or --from is given;
    those stop at the end of the topic unless --follow."""
    from tapeflow.topic_tail import parse_start_time, tail

    if from_beginning and from_time is not None:
        raise fail("--from-beginning and --from exclude each other", 2)
    settings = state.settings()
    from_ms = None if from_time is None else parse_start_time(from_time, int(time.time() * 1000))
    base = settings.topic_prefix
    name = topic if base and topic.startswith(base) else base + topic
    count = tail(
        bootstrap_address(),
        name,
        settings.schema_registry_url,
        from_beginning=from_beginning,
        max_records=max_records,
        idle_timeout=timeout,
        symbol=symbol,
        json_out=json_out,
        out=echo,
        from_ms=from_ms,
        key=key,
        follow=follow,
    )
    if not json_out:
        typer.echo(f"-- {count} record(s)", err=True)
