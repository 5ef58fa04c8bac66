"""Does the embedded broker's memory stay bounded across topic epochs? (issue 21)

Why this exists: the 70-minute endurance run (144 rollovers, ~3,600 deleted topics) saw the broker's
PSS peaks creep 45 -> 56 MB (first fifth -> last fifth 1.33x). A rollover creates a new epoch's topics
under a new prefix, new consumer groups (their names carry the prefix), new idempotent producers (the
engine, executor and sink are new processes), then deletes the old topics and groups. This isolates
the broker from the stack: Tansu alone (started the way ``tapeflow up`` starts it: loopback, memory
storage), driven through ``--rounds`` rounds of one epoch each:

1. create the catalogue's 23 topics plus two engine-like ones (``--topics`` of them) under the round's prefix,
2. produce ``--records`` small records to each (a new idempotent producer per round, as the stack's new
   processes make; ``--one-producer`` keeps one for the whole run, ``--no-idempotence`` makes them
   plain acks=all producers, which Tansu keeps no producer id for),
3. consume them with ``--groups`` fresh consumer groups (subscribe, read to the end, commit), like the
   sink, engine and executor groups of an epoch,
4. delete the topics (DeleteTopics).

Variants (``--variant``):
  a  as the stack did before b01616c: topics deleted, groups left behind
  b  as the stack does now: topics deleted, then the round's groups (DeleteGroups)
  c  two prefixes alternating (ping-pong): the same topic and group names come back every other round
  d  no consume/commit at all (no groups): only create, produce, delete
  e  c without consuming: two prefixes alternating, no groups

Every ``--sample-every`` rounds the broker's RSS, PSS and USS (psutil ``memory_full_info``) are
printed; the summary gives the growth per 100 rounds (least squares over the samples after the first
fifth) and the first-fifth -> last-fifth ratio of the samples. The broker's log is scanned for
panics at the end.

Run: ``.venv/bin/python -m benchmarks.bench_broker_epochs --variant b --rounds 300``. Results and
what they mean: ``benchmarks/RESULTS.md``, "Broker memory across epochs".
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import NewTopic

EXTRA_TOPICS = (("tapeflow-engine-__assignor-__leader", 1), ("tapeflow-engine-features-changelog", 6))
GROUP_NAMES = ("tapeflow-sink", "tapeflow-engine", "tapeflow-executor-paper")


def start_broker(home: Path):
    from tapeflow.stack.broker import TansuBroker
    from tapeflow.stack.supervisor import Supervisor
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import Settings

    paths = StackPaths(home)
    paths.ensure()
    settings = Settings(home=home, broker=None, database_url=None, broker_port=0, database_port=0)
    sup = Supervisor(settings, paths, say=lambda m: None, services=[TansuBroker(settings, paths)], steps=[])
    sup.start_all()
    return sup


def topic_specs(count: int) -> list[tuple[str, int]]:
    from schemas.catalogue import all_topics

    specs = [(t.name, t.partitions) for t in all_topics()] + list(EXTRA_TOPICS)
    return specs[:count]


def prefix_of(variant: str, base: str, rnd: int) -> str:
    return f"{base}e{rnd % 2 + 1}." if variant in "ce" else f"{base}e{rnd + 1}."


def settle(futures: dict, ok: tuple[str, ...] = ()) -> int:
    """Wait for every admin future; returns how many failed with an error not in ``ok``."""
    failed = 0
    for name, future in futures.items():
        try:
            future.result(timeout=60)
        except Exception as exc:  # noqa: BLE001 - counted and printed, the run goes on
            if not any(o in str(exc) for o in ok):
                failed += 1
                print(f"    {name}: {exc}")
    return failed


def consume_group(bootstrap: str, group: str, topics: list[str], expected: int, out: dict) -> None:
    from tapeflow_runtime.kafka_client import consumer_config

    consumer = Consumer(consumer_config(bootstrap, group))
    got = 0
    try:
        consumer.subscribe(topics)
        deadline = time.monotonic() + 120
        while got < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    got += 1
                elif msg.error().code() != KafkaError._PARTITION_EOF:
                    out.setdefault("errors", []).append(str(msg.error()))
        if got:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
        out[group] = got


def one_round(bootstrap: str, admin, variant: str, base: str, rnd: int, specs, records: int, groups: int,
              producer: Producer | None, producer_extra: dict) -> dict:
    from tapeflow_runtime.kafka_client import producer_config

    prefix = prefix_of(variant, base, rnd)
    names = [prefix + name for name, _ in specs]
    stats = {"failed": 0}
    stats["failed"] += settle(admin.create_topics([NewTopic(prefix + n, num_partitions=p, replication_factor=-1)
                                                   for n, p in specs], operation_timeout=30))
    own = producer is None
    if own:
        producer = Producer(producer_config(bootstrap, **producer_extra))
    value = b"x" * 80
    errors: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    for i in range(records):
        for name in names:
            while True:
                try:
                    producer.produce(name, key=f"k{i % 7}".encode(), value=value, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    stats["undelivered"] = left + len(errors)
    if errors:
        stats["delivery_errors"] = sorted(set(errors))[:3]
    if own:
        del producer
    group_names = []
    if variant not in "de":
        out: dict = {}
        threads = []
        for k in range(groups):
            group = prefix + GROUP_NAMES[k % len(GROUP_NAMES)] + (f"-{k}" if k >= len(GROUP_NAMES) else "")
            group_names.append(group)
            mine = names[k::groups]
            threads.append(threading.Thread(target=consume_group,
                                            args=(bootstrap, group, mine, records * len(mine), out)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats["consumed"] = sum(v for k, v in out.items() if k != "errors")
        stats["consume_errors"] = len(out.get("errors", []))
        if stats["consumed"] != records * len(names):
            stats["consume_errors"] += 1
    stats["failed"] += settle(admin.delete_topics(names, operation_timeout=30), ("UNKNOWN_TOPIC",))
    if variant == "b" and group_names:
        stats["failed"] += settle(admin.delete_consumer_groups(group_names, request_timeout=30),
                                  ("GROUP_ID_NOT_FOUND",))
    return stats


def memory(pid: int) -> tuple[float, float, float]:
    info = psutil.Process(pid).memory_full_info()
    return info.rss / 2**20, info.pss / 2**20, info.uss / 2**20


def slope_per_100(points: list[tuple[int, float]]) -> float:
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices="abcde", default="a")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--topics", type=int, default=25)
    parser.add_argument("--records", type=int, default=200, help="records per topic per round")
    parser.add_argument("--groups", type=int, default=3, help="consumer groups per round")
    parser.add_argument("--sample-every", type=int, default=10)
    parser.add_argument("--one-producer", action="store_true", help="one idempotent producer for the whole run")
    parser.add_argument("--no-idempotence", action="store_true",
                        help="plain producers (acks=all, no producer id): Tansu then skips its producer bookkeeping")
    parser.add_argument("--base", default="bench.")
    args = parser.parse_args()

    from tapeflow_runtime.kafka_client import admin_client, producer_config

    specs = topic_specs(args.topics)
    with tempfile.TemporaryDirectory(prefix="bench-broker-epochs-") as tmp:
        sup = start_broker(Path(tmp))
        try:
            run = sup.running["broker"]
            pid, log_path, bootstrap = run.proc.pid, Path(run.record.log), sup.addresses["broker"]
            admin = admin_client(bootstrap)
            extra = {"enable.idempotence": False} if args.no_idempotence else {}
            producer = Producer(producer_config(bootstrap, **extra)) if args.one_producer else None
            print(f"variant {args.variant}: {args.rounds} rounds of {len(specs)} topics "
                  f"({sum(p for _, p in specs)} partitions), {args.records} records each, "
                  f"{0 if args.variant in 'de' else args.groups} groups, "
                  f"{'one producer' if args.one_producer else 'a new producer per round'}"
                  f"{' (not idempotent)' if args.no_idempotence else ' (idempotent)'}; broker pid {pid}")
            rss, pss, uss = memory(pid)
            print(f"round    0: rss {rss:6.1f} MB  pss {pss:6.1f}  uss {uss:6.1f}")
            samples: list[tuple[int, float, float, float]] = []
            began = last_sample = time.monotonic()
            problems = 0
            for rnd in range(args.rounds):
                stats = one_round(bootstrap, admin, args.variant, args.base, rnd, specs, args.records,
                                  args.groups, producer, extra)
                if stats["failed"] or stats["undelivered"] or stats.get("consume_errors"):
                    problems += 1
                    print(f"    round {rnd + 1}: {stats}")
                if (rnd + 1) % args.sample_every == 0:
                    rss, pss, uss = memory(pid)
                    samples.append((rnd + 1, rss, pss, uss))
                    now = time.monotonic()
                    print(f"round {rnd + 1:4d}: rss {rss:6.1f} MB  pss {pss:6.1f}  uss {uss:6.1f}  "
                          f"({(now - last_sample) / args.sample_every:.2f} s/round lately)", flush=True)
                    last_sample = now
            groups_left = len(admin.list_consumer_groups(request_timeout=30).result().valid)
            if producer is not None:
                producer.flush(10)
                producer = None  # gone before the broker: no reconnect noise
        finally:
            sup.stop_all()
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
    panics = [line for line in log.splitlines() if "panic" in line.lower()]
    fifth = max(1, len(samples) // 5)
    first, last = samples[:fifth], samples[-fifth:]
    steady = samples[fifth:]
    print(f"summary variant {args.variant}: {args.rounds} rounds in {time.monotonic() - began:.0f} s, "
          f"rounds with problems {problems}, groups listed at the end {groups_left}, panics in the log {len(panics)}")
    for label, col in (("rss", 1), ("pss", 2), ("uss", 3)):
        f = statistics.fmean(s[col] for s in first)
        lst = statistics.fmean(s[col] for s in last)
        print(f"  {label}: first fifth {f:.1f} MB -> last fifth {lst:.1f} MB ({lst / f:.2f}x), "
              f"max {max(s[col] for s in samples):.1f}, growth after the first fifth "
              f"{slope_per_100([(s[0], s[col]) for s in steady]):+.2f} MB per 100 rounds")
    for line in panics[:5]:
        print(f"  log: {line[:300]}")


if __name__ == "__main__":
    main()
