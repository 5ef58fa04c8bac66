"""Schema registries: the committed registry.json must match the .avsc files (so forgetting
`python -m schemas.registry update` fails CI), ids are stable and append-only, `check` catches
unregistered, changed and incompatible schemas, and the HTTP client speaks the Confluent REST API
(tested against a small aiohttp fake on loopback)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from schemas.avsc import canonical_json, load_avsc
from schemas.catalogue import DLQ_TOPICS, all_topics, topic
from schemas.compatibility import backward_incompatibilities
from schemas.errors import (
    IncompatibleSchemaError,
    SchemaRegistryError,
    UnknownSchemaIdError,
    UnregisteredSchemaError,
)
from schemas.registry import (
    DEFAULT_REGISTRY_PATH,
    FileSchemaRegistry,
    HttpSchemaRegistry,
    SchemaRegistry,
    check_registry,
    main,
    register_all,
    registry_from_env,
    registry_from_url,
    schema_fingerprint,
)
from schemas.serde import AvroSerde
from tests.support.paths import REPO

BTC_TRADE = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "agg_id": 2270511834,
    "price": 67012.4,
    "qty": 0.153,
    "first_trade_id": 5102938811,
    "last_trade_id": 5102938814,
    "event_time": 1718000000123,
    "trade_time": 1718000000119,
    "receive_time": 1718000000161,
    "taker_side": "SELL",
}


def _copy_committed(tmp_path: Path) -> Path:
    path = tmp_path / "registry.json"
    shutil.copy(DEFAULT_REGISTRY_PATH, path)
    return path


def _trade_with_default_field() -> dict:
    schema = load_avsc("trade")
    schema["fields"].append({"name": "source", "type": "string", "default": "ws", "doc": "ws, rest or vision."})
    return schema


# --- the committed file ------------------------------------------------------------------------
def test_committed_registry_matches_the_avsc_files():
    assert check_registry(FileSchemaRegistry()) == []


def test_check_command_passes_on_the_committed_registry():
    result = subprocess.run(
        [sys.executable, "-m", "schemas.registry", "check"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "ok:" in result.stdout


def test_committed_ids_never_change():
    """Every version in the last commit is still there, unchanged (append-only)."""
    shown = subprocess.run(["git", "show", "HEAD:schemas/registry.json"], cwd=REPO, capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip("schemas/registry.json is not committed yet: nothing to compare against")
    committed = json.loads(shown.stdout)["subjects"]
    current = json.loads(DEFAULT_REGISTRY_PATH.read_text())["subjects"]
    for subject, versions in committed.items():
        assert current.get(subject, [])[: len(versions)] == versions, subject


def test_same_schema_same_id_and_distinct_schemas_distinct_ids():
    registry = FileSchemaRegistry()
    ids = {}
    for spec in all_topics():
        schema_id = registry.id_for(spec.value_subject, load_avsc(spec.value_schema))
        assert registry.id_for(spec.value_subject, load_avsc(spec.value_schema)) == schema_id
        ids.setdefault(spec.value_schema, set()).add(schema_id)
    assert all(len(v) == 1 for v in ids.values())  # dead_letter: one id for all dlq subjects
    assert len({next(iter(v)) for v in ids.values()}) == len(ids)
    assert isinstance(registry, SchemaRegistry)


def test_fresh_update_is_deterministic(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["update", "--registry", str(a)]) == 0
    assert main(["update", "--registry", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert main(["check", "--registry", str(a)]) == 0


def test_update_on_committed_registry_is_a_no_op(tmp_path):
    path = _copy_committed(tmp_path)
    before = path.read_bytes()
    assert main(["update", "--registry", str(path)]) == 0
    assert path.read_bytes() == before


# --- FileSchemaRegistry behaviour --------------------------------------------------------------
def test_new_version_appends_with_next_id_and_keeps_old_entries(tmp_path):
    path = _copy_committed(tmp_path)
    before = json.loads(path.read_text())["subjects"]
    registry = FileSchemaRegistry(path)
    max_id = max(e["id"] for versions in before.values() for e in versions)
    new_id = registry.register("md.trades-value", _trade_with_default_field())
    assert new_id == max_id + 1
    registry.save()
    after = json.loads(path.read_text())["subjects"]
    assert after["md.trades-value"][:-1] == before["md.trades-value"]
    assert after["md.trades-value"][-1]["version"] == len(before["md.trades-value"]) + 1
    assert {s: v for s, v in after.items() if s != "md.trades-value"} == {
        s: v for s, v in before.items() if s != "md.trades-value"
    }
    reloaded = FileSchemaRegistry(path)
    assert reloaded.id_for("md.trades-value", _trade_with_default_field()) == new_id
    assert reloaded.id_for("md.trades-value", load_avsc("trade")) == before["md.trades-value"][0]["id"]
    assert canonical_json(reloaded.schema_for(new_id)) == canonical_json(_trade_with_default_field())


def test_identical_schema_reuses_its_id_under_another_subject(tmp_path):
    registry = FileSchemaRegistry(_copy_committed(tmp_path))
    dlq_id = registry.id_for("dlq.md-value", load_avsc("dead_letter"))
    assert registry.register("dlq.some.new.topic-value", load_avsc("dead_letter")) == dlq_id


def test_incompatible_version_is_refused_and_nothing_is_written(tmp_path):
    path = _copy_committed(tmp_path)
    before = path.read_bytes()
    registry = FileSchemaRegistry(path)
    bad = load_avsc("trade")
    bad["fields"].append({"name": "source", "type": "string", "doc": "no default"})
    with pytest.raises(IncompatibleSchemaError, match=r"md\.trades-value: .*Trade\.source"):
        registry.register("md.trades-value", bad)
    with pytest.raises(UnregisteredSchemaError):
        registry.id_for("md.trades-value", bad)
    assert path.read_bytes() == before


def test_lookup_errors(tmp_path):
    registry = FileSchemaRegistry(tmp_path / "empty.json")
    with pytest.raises(UnregisteredSchemaError, match="schemas.registry update"):
        registry.id_for("md.trades-value", load_avsc("trade"))
    with pytest.raises(UnknownSchemaIdError, match="schema id 7 is not in"):
        registry.schema_for(7)


def test_fingerprint_is_sha256_of_parsing_canonical_form():
    import hashlib

    from fastavro.schema import to_parsing_canonical_form

    schema = load_avsc("data_gap")
    assert schema_fingerprint(schema) == hashlib.sha256(to_parsing_canonical_form(schema).encode()).hexdigest()


# --- check -------------------------------------------------------------------------------------
def _registry_with(tmp_path, trade_schema) -> FileSchemaRegistry:
    registry = FileSchemaRegistry(tmp_path / "r.json")
    for spec in all_topics():
        schema = trade_schema if spec.name == "md.trades" else load_avsc(spec.value_schema)
        registry.register(spec.value_subject, schema)
    return registry


def test_check_reports_unregistered_schemas(tmp_path):
    problems = check_registry(FileSchemaRegistry(tmp_path / "empty.json"))
    assert len(problems) == len(all_topics())
    assert problems[0] == "md.trades-value: not registered (run `python -m schemas.registry update`)"
    assert main(["check", "--registry", str(tmp_path / "empty.json")]) == 1


def test_check_reports_a_compatible_but_unregistered_change(tmp_path):
    registry = _registry_with(tmp_path, _trade_with_default_field())  # .avsc lacks `source`: compatible
    assert check_registry(registry) == [
        "md.trades-value: .avsc differs from the latest registered version (run `python -m schemas.registry update`)"
    ]


def test_check_reports_an_incompatible_avsc(tmp_path):
    registered = load_avsc("trade")
    next(f for f in registered["fields"] if f["name"] == "taker_side")["type"]["symbols"] = ["BUY", "SELL", "NONE"]
    registry = _registry_with(tmp_path, registered)  # the committed .avsc lost the symbol NONE
    problems = check_registry(registry)
    assert len(problems) == 1 and problems[0].startswith("md.trades-value: new schema cannot read")
    assert "lost symbol(s) NONE" in problems[0]
    registry.save()
    assert main(["check", "--registry", str(registry.path)]) == 1
    assert main(["update", "--registry", str(registry.path)]) == 1


def test_check_reports_hand_edits(tmp_path):
    path = _copy_committed(tmp_path)
    data = json.loads(path.read_text())
    data["subjects"]["md.trades-value"][0]["fingerprint"] = "0" * 64
    data["subjects"]["md.book-value"][0]["id"] = data["subjects"]["md.depth-value"][0]["id"]
    path.write_text(json.dumps(data))
    problems = check_registry(FileSchemaRegistry(path))
    assert any("md.trades-value version 1: fingerprint" in p for p in problems)
    depth_id = data["subjects"]["md.depth-value"][0]["id"]
    # subjects are checked in sorted order: md.book-value claims the id first, md.depth-value collides
    assert f"md.depth-value version 1: id {depth_id} is already used by a different schema" in problems


# --- factory -----------------------------------------------------------------------------------
def test_registry_from_url(tmp_path):
    assert registry_from_url(None).path == DEFAULT_REGISTRY_PATH
    assert registry_from_url("").path == DEFAULT_REGISTRY_PATH
    assert registry_from_url(f"file://{tmp_path}/r.json").path == tmp_path / "r.json"
    http = registry_from_url("http://user:p%40ss@127.0.0.1:8081/")
    assert isinstance(http, HttpSchemaRegistry) and http.base_url == "http://127.0.0.1:8081"
    with pytest.raises(ValueError, match="unsupported schema registry URL"):
        registry_from_url("ftp://127.0.0.1/r.json")
    assert isinstance(registry_from_env({"TAPEFLOW_SCHEMA_REGISTRY_URL": "http://127.0.0.1:1"}), HttpSchemaRegistry)
    assert registry_from_env({}).path == DEFAULT_REGISTRY_PATH


# --- HTTP client against a fake Confluent Schema Registry --------------------------------------
class FakeConfluentRegistry:
    """The four REST endpoints the client uses, with Confluent's replies and error codes.
    Registration enforces BACKWARD compatibility against the subject's latest version."""

    def __init__(self):
        self.schemas: list[str] = []  # index + 1 = id
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self.auth_headers: list[str | None] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/subjects/{subject}/versions", self.register)
        app.router.add_post("/subjects/{subject}", self.lookup)
        app.router.add_get("/subjects/{subject}/versions/latest", self.latest)
        app.router.add_get("/schemas/ids/{id}", self.by_id)
        app.middlewares.append(self._record)
        return app

    @web.middleware
    async def _record(self, request, handler):
        self.requests.append((request.method, request.path))
        self.auth_headers.append(request.headers.get("Authorization"))
        return await handler(request)

    @staticmethod
    def _error(status, code, message):
        return web.json_response(
            {"error_code": code, "message": message},
            status=status,
            content_type="application/vnd.schemaregistry.v1+json",
        )

    async def register(self, request):
        subject = request.match_info["subject"]
        schema = json.loads((await request.json())["schema"])
        text = canonical_json(schema)
        versions = self.subjects.setdefault(subject, [])
        for schema_id in versions:
            if self.schemas[schema_id - 1] == text:
                return web.json_response({"id": schema_id})
        if versions and backward_incompatibilities(schema, json.loads(self.schemas[versions[-1] - 1])):
            return self._error(409, 409, "Schema being registered is incompatible with an earlier schema")
        if text not in self.schemas:
            self.schemas.append(text)
        schema_id = self.schemas.index(text) + 1
        versions.append(schema_id)
        return web.json_response({"id": schema_id})

    async def lookup(self, request):
        subject = request.match_info["subject"]
        text = canonical_json(json.loads((await request.json())["schema"]))
        for n, schema_id in enumerate(self.subjects.get(subject, []), start=1):
            if self.schemas[schema_id - 1] == text:
                return web.json_response({"subject": subject, "version": n, "id": schema_id, "schema": text})
        return self._error(404, 40403, "Schema not found")

    async def latest(self, request):
        versions = self.subjects.get(request.match_info["subject"])
        if not versions:
            return self._error(404, 40401, "Subject not found.")
        return web.json_response(
            {"version": len(versions), "id": versions[-1], "schema": self.schemas[versions[-1] - 1]}
        )

    async def by_id(self, request):
        schema_id = int(request.match_info["id"])
        if not 1 <= schema_id <= len(self.schemas):
            return self._error(404, 40403, "Schema not found")
        return web.json_response({"schema": self.schemas[schema_id - 1]})


@pytest.fixture
async def fake_registry():
    fake = FakeConfluentRegistry()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield fake, f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def test_http_register_lookup_and_cache(fake_registry):
    fake, url = fake_registry
    client = HttpSchemaRegistry(url)
    trade = load_avsc("trade")
    schema_id = await asyncio.to_thread(client.id_for, "md.trades-value", trade)
    assert await asyncio.to_thread(client.id_for, "md.trades-value", trade) == schema_id
    assert fake.requests == [("POST", "/subjects/md.trades-value/versions")]  # second call cached
    fresh = HttpSchemaRegistry(url)
    assert canonical_json(await asyncio.to_thread(fresh.schema_for, schema_id)) == canonical_json(trade)
    assert fake.requests[-1] == ("GET", f"/schemas/ids/{schema_id}")
    assert canonical_json(await asyncio.to_thread(fresh.latest, "md.trades-value")) == canonical_json(trade)
    assert await asyncio.to_thread(fresh.latest, "md.book-value") is None


async def test_http_register_all_shares_ids_like_the_file_registry(fake_registry):
    fake, url = fake_registry
    ids = await asyncio.to_thread(register_all, HttpSchemaRegistry(url))
    assert set(ids) == {t.value_subject for t in all_topics()}
    assert len({ids[topic(name).value_subject] for name in DLQ_TOPICS}) == 1
    assert len(set(ids.values())) == len({t.value_schema for t in all_topics()})


async def test_http_errors_are_mapped(fake_registry):
    fake, url = fake_registry
    client = HttpSchemaRegistry(url)
    await asyncio.to_thread(client.id_for, "md.trades-value", load_avsc("trade"))
    bad = load_avsc("trade")
    bad["fields"].append({"name": "source", "type": "string"})
    with pytest.raises(IncompatibleSchemaError, match="HTTP 409"):
        await asyncio.to_thread(client.id_for, "md.trades-value", bad)
    with pytest.raises(UnknownSchemaIdError, match="schema id 4242"):
        await asyncio.to_thread(client.schema_for, 4242)
    lookup_only = HttpSchemaRegistry(url, auto_register=False)
    with pytest.raises(UnregisteredSchemaError):
        await asyncio.to_thread(lookup_only.id_for, "md.book-value", load_avsc("book_snapshot"))
    assert await asyncio.to_thread(lookup_only.id_for, "md.trades-value", load_avsc("trade")) == 1


async def test_http_unreachable_registry():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = HttpSchemaRegistry(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(SchemaRegistryError, match="cannot reach the registry"):
        await asyncio.to_thread(client.schema_for, 1)


async def test_http_basic_auth_from_url(fake_registry):
    fake, url = fake_registry
    client = HttpSchemaRegistry(url.replace("http://", "http://svc:s%3Acret@"))
    await asyncio.to_thread(client.id_for, "md.trades-value", load_avsc("trade"))
    assert fake.auth_headers == ["Basic " + base64.b64encode(b"svc:s:cret").decode()]


async def test_serde_round_trip_through_the_http_registry(fake_registry):
    fake, url = fake_registry
    data = await asyncio.to_thread(AvroSerde(HttpSchemaRegistry(url)).encode, "md.trades", BTC_TRADE)
    consumer = AvroSerde(HttpSchemaRegistry(url))  # empty caches: must fetch the writer schema by id
    assert await asyncio.to_thread(consumer.decode, data) == BTC_TRADE
    assert ("GET", f"/schemas/ids/{int.from_bytes(data[1:5], 'big')}") in fake.requests


def test_copy_of_committed_registry_is_independent(tmp_path):
    # FileSchemaRegistry must not share state between instances (register on one, not the other)
    a = FileSchemaRegistry(_copy_committed(tmp_path))
    b = FileSchemaRegistry(DEFAULT_REGISTRY_PATH)
    a.register("md.trades-value", _trade_with_default_field())
    with pytest.raises(UnregisteredSchemaError):
        b.id_for("md.trades-value", copy.deepcopy(_trade_with_default_field()))
