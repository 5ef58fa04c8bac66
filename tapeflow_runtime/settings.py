"""One settings object for every tapeflow process.

Sources, highest priority first: explicit overrides (CLI flags), environment variables `TAPEFLOW_*`,
a `.env` file in the working directory, a YAML file (`TAPEFLOW_CONFIG` or `--config`), defaults.
Validation happens once, at start, so a typo fails in one line instead of deep inside a consumer.
Secrets are `SecretStr` (or `*_FILE` paths) so they never reach a log line or `tapeflow status`.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from tapeflow_runtime.errors import TapeflowError

DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")

# Binance USD-M perpetuals and quarterlies: BASE + USDT/USDC, optional _YYMMDD delivery suffix.
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}(USDT|USDC)(_\d{6})?$")
_HOSTPORT_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class ConfigError(TapeflowError):
    """A configuration problem, with a one-line message meant for the user (no traceback)."""


_DURATION_RE = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w|y)\s*$")
_UNIT = {
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": timedelta(days=365),
}
FOREVER = ("forever", "never", "none", "off")


def parse_duration(text: str | int) -> timedelta | None:
    """'90d', '12h', '30m', '2w', '1y' (or a number of days) -> timedelta; 'forever'/'never' -> None."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = f"{text}d"
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as 90d, 12h or forever, got {text!r}")
    if text.strip().lower() in FOREVER:
        return None
    m = _DURATION_RE.match(text.lower())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"expected a duration such as 90d, 12h, 2w, 1y or forever, got {text!r}")
    return int(m.group(1)) * _UNIT[m.group(2)]


class TableRetention(BaseModel):
    """One table's storage policy; unset fields keep tapeflow's default (sinks/retention.py)."""

    model_config = ConfigDict(extra="forbid")
    keep: str | None = Field(default=None, description="How long rows are kept: 90d, 12h, 2w, 1y or forever.")
    compress_after: str | None = Field(
        default=None, description="TimescaleDB: compress chunks older than this (1d, 7d, ...) or never."
    )

    @field_validator("keep", "compress_after", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if v is None:
            return None
        parse_duration(v)
        return str(v).strip().lower() if not isinstance(v, int) else f"{v}d"


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tapeflow"


def _split_words(v: Any) -> Any:
    """A list from the environment is comma- or space-separated."""
    return [s for s in re.split(r"[,\s]+", v) if s] if isinstance(v, str) else v


def _empty_is_unset(v: Any) -> Any:
    """docker-compose passes an unset channel or file as an empty variable: that means off, not ''."""
    return None if v == "" else v


# The groups below are mixins of `Settings`, one per part of tapeflow that reads them; they are not
# settings objects of their own (only `Settings` has the sources, the env prefix and `extra="forbid"`).
# `Settings` lists them in reverse: pydantic orders the fields base by base from the end of the MRO,
# so the table in docs/reference/settings.md and `tapeflow status` follow the order of this file.
# Validators are merged by method name across the groups, so each group's validator names are its own.


class ProcessSettings(BaseModel):
    """Where state lives and how every process logs, listens for /metrics and is started or stopped."""

    home: Path = Field(default_factory=default_home, description="All state: pid files, logs, data.")
    metrics_host: str = Field(default="127.0.0.1", description="Where service /metrics and /health listen.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level of every process."
    )
    log_format: Literal["console", "json"] = Field(
        default="console", description="Log lines for people (console) or one JSON object per line (json)."
    )
    startup_timeout_s: float = Field(
        default=60.0, gt=0, description="`up`: how long each service may take to be healthy."
    )
    stop_timeout_s: float = Field(default=10.0, gt=0, description="`down`: SIGTERM grace before SIGKILL.")

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().absolute()


class BrokerSettings(BaseModel):
    """The Kafka cluster (embedded or external), its schema registry and how topics are named and kept."""

    broker: str | None = Field(
        default=None,
        description="External Kafka bootstrap servers host:port[,host:port]; unset = the embedded Apache Kafka.",
    )
    broker_port: int = Field(default=0, ge=0, le=65535, description="Embedded broker port; 0 = pick a free one.")
    broker_heap_mb: int = Field(default=512, ge=128, le=65_536, description="Embedded broker: the JVM's maximum heap.")
    schema_registry_url: str | None = Field(
        default=None, description="Confluent-compatible Schema Registry; unset = file registry in the repo."
    )
    topic_prefix: str = Field(
        default="", pattern=r"^[A-Za-z0-9._-]*$", description="Prefix for every topic (shared clusters, tests)."
    )
    namespace: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_-]*$",
        description="Rehearsal namespace (`--input-prefix NAME`): topic_prefix already ends in `NAME.`; "
        "services read history `tapeflow replay` copied there, never live topics.",
    )
    topic_retention: str = Field(
        default="7d",
        description="How long the broker keeps market data (md.* topics) after it arrived, set when "
        "the topics are created (30m, 24h, 7d, forever); derived topics keep 30 days, trading records forever.",
    )

    @field_validator("broker")
    @classmethod
    def _broker_hostports(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        for part in v.split(","):
            part = part.strip()
            if not _HOSTPORT_RE.match(part) or not 0 < int(part.rsplit(":", 1)[1]) < 65536:
                raise ValueError(f"expected host:port[,host:port], got {v!r}")
        return v

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_scheme(cls, v: str | None) -> str | None:
        if not v:
            return None
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"expected an http(s):// URL, got {v!r}")
        return v.rstrip("/")

    @field_validator("topic_retention", mode="before")
    @classmethod
    def _topic_retention(cls, v: Any) -> Any:
        text = str(v).strip().lower()
        kept = parse_duration(text)
        if kept is not None and kept.total_seconds() < 1:
            raise ValueError("topic_retention must be at least 1s (or forever)")
        return text

    def topic_retention_ms(self) -> int:
        """``topic_retention`` in milliseconds, 0 for forever (``schemas.catalogue.topic_configs``)."""
        kept = parse_duration(self.topic_retention)
        return 0 if kept is None else int(kept.total_seconds() * 1000)

    def topic(self, name: str) -> str:
        """The physical topic name for a catalogue topic (applies `topic_prefix`)."""
        return f"{self.topic_prefix}{name}"


class DatabaseSettings(BaseModel):
    """The PostgreSQL/TimescaleDB database (embedded or external), its roles and how long tables keep rows."""

    database_url: SecretStr | None = Field(
        default=None, description="External PostgreSQL/TimescaleDB URL; unset = embedded PostgreSQL."
    )
    database_port: int = Field(default=0, ge=0, le=65535, description="Embedded PostgreSQL port; 0 = free one.")
    database_name: str = Field(
        default="tapeflow", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="Database the embedded stack creates."
    )
    writer_password: SecretStr | None = Field(
        default=None, description="External database: LOGIN password given to tapeflow_writer by `db migrate`."
    )
    readonly_password: SecretStr | None = Field(
        default=None, description="External database: LOGIN password given to tapeflow_readonly (Grafana)."
    )
    retention: dict[str, TableRetention] = Field(
        default_factory=dict,
        description="Per-table retention/compression, e.g. {trades: {keep: 90d, compress_after: 1d}}; "
        "unset tables keep the defaults (only raw depth expires).",
    )

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value():
            return None
        if not re.match(r"^postgres(ql)?://", v.get_secret_value()):
            raise ValueError("must start with postgresql:// (value hidden)")
        return v


class MarketDataSettings(BaseModel):
    """What the market-data producers read (venues, symbols, live or a recording) and how they prime and batch."""

    exchange: Literal["binance"] = Field(default="binance", description="The venue `up` trades and primes from.")
    source: str = Field(
        default="live", description="Market data: `live` (the exchange) or `replay:DIR` (a recording, offline)."
    )
    replay_speed: str = Field(
        default="1", description="Replay speed: 1x (real time), 10x, ... or max (the x is optional)."
    )
    venues: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["binance"],
        description="Venues a live `up` runs a producer for (comma-separated: "
        "binance plus bybit and/or okx), all into the same md.* topics; the others are for the cross-venue watchlist.",
    )
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_SYMBOLS),
        description="Binance USD-M symbols (comma-separated, validated); a replay uses the recording's.",
    )
    warm_start_hours: float = Field(
        default=25.0,
        ge=0,
        le=72,
        description="A live producer first primes md.* with this many hours of history "
        "(Binance Vision, REST, or the database) so a new engine group has its 24 h windows at once; 0 = off.",
    )
    warm_start_detail_minutes: float = Field(
        default=62.0,
        ge=0,
        le=4320,
        description="The warm start pages trades one by one (REST aggTrades) only for "
        "the last this many minutes and takes 1m klines (minute bars: exact for the 4h/24h CVD, bars and ATR) "
        "before, so its REST cost does not grow with the hour of the UTC day; the feature records say what is "
        "approximated (`approx_until_ms`). 0 = every trade of the window (Vision archives and REST).",
    )
    market_data_linger_ms: int = Field(
        default=25,
        ge=0,
        le=1_000,
        description="How long the market-data producers hold a record for its "
        "batch (librdkafka's linger.ms): a trade reaches the engine up to this later; larger batches cost "
        "the broker and the consumers less per record.",
    )

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v == "live":
            return v
        if not v.startswith("replay:"):
            raise ValueError(f"expected `live` or `replay:DIR`, got {v!r}")
        directory = Path(v.removeprefix("replay:")).expanduser()
        if not (directory / "ws_frames.txt").is_file():
            raise ValueError(f"{directory} is not a recording directory (no ws_frames.txt)")
        return f"replay:{directory.absolute()}"

    @field_validator("replay_speed")
    @classmethod
    def _speed(cls, v: str) -> str:
        from tapeflow_runtime.speed import parse_speed, speed_text

        return speed_text(parse_speed(v))  # 10x and 10 alike, passed on as 10

    @property
    def replay_dir(self) -> Path | None:
        return Path(self.source.removeprefix("replay:")) if self.source.startswith("replay:") else None

    @field_validator("venues", "symbols", mode="before")
    @classmethod
    def _split_market_lists(cls, v: Any) -> Any:
        return _split_words(v)

    @field_validator("venues")
    @classmethod
    def _known_venues(cls, v: list[str]) -> list[str]:
        out = list(dict.fromkeys(s.strip().lower() for s in v))
        unknown = [s for s in out if s not in ("binance", "bybit", "okx")]
        if unknown:
            raise ValueError(f"unknown venue(s) {', '.join(unknown)}: expected binance, bybit, okx")
        if "binance" not in out:
            raise ValueError(
                "binance is required (the engine's history, warm start and replays are Binance's); "
                "add bybit and/or okx beside it"
            )
        return out

    @field_validator("symbols")
    @classmethod
    def _known_symbols(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one symbol is required")
        out = []
        for s in v:
            up = s.strip().upper()
            if not _SYMBOL_RE.match(up):
                raise ValueError(f"unknown symbol {s!r}: expected a Binance USD-M symbol such as BTCUSDT")
            if up not in out:
                out.append(up)
        return out


class ConsumerSettings(BaseModel):
    """How the sink, the engine and the executor fetch from Kafka and write to the database."""

    sink_writers: int = Field(
        default=2, ge=1, le=16, description="Sink writer threads, each with its own database connection."
    )
    sink_fetch_wait_ms: int = Field(
        default=2_000,
        ge=1,
        le=5_000,
        description="The sink's fetch wait when nothing is new: Kafka answers a "
        "fetch as soon as records arrive, so this only spaces the idle fetches of the sink's ~100 partitions.",
    )
    sink_raw_fetch: bool = Field(
        default=True,
        description="On a one-broker cluster (the embedded Kafka, or an external single node), the "
        "sink fetches trades, liquidations, mark prices and 1-minute bars as whole record batches (no Python "
        "object per record: about a quarter of the sink's CPU per row); false: every record through librdkafka.",
    )
    engine_fetch_wait_ms: int = Field(
        default=500,
        ge=1,
        le=1_500,
        description="The engine's fetch wait when nothing is new (Kafka answers as "
        "soon as records arrive): spaces its idle fetches.",
    )
    executor_fetch_wait_ms: int = Field(
        default=2_000,
        ge=1,
        le=5_000,
        description="The executor's fetch wait when nothing is new (Kafka answers "
        "as soon as a signal arrives): spaces its idle fetches.",
    )


class StrategySettings(BaseModel):
    """Which strategies the engine runs and whether `up` runs the cross-venue watchlist, with its strategies."""

    strategies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Strategy files (comma-separated) the engine runs: `up`'s engine and `tapeflow engine` "
        "without --strategy; empty: the shipped ones (`tapeflow strategy list`). Start one with "
        "`tapeflow strategy new`.",
    )
    engine_follow_rollouts: bool = Field(
        default=True,
        description="The engine follows `tapeflow strategy promote`/`rollback` (config.rollouts) and switches "
        "each symbol to the new revisions at its next input, without a restart; false: it keeps the revisions "
        "it started on.",
    )
    watchlist: bool = Field(
        default=False,
        description="`up` also runs the cross-venue watchlist service (`tapeflow cross-venue`: "
        "xv.features, stored in xv_features); it needs a second venue's producer (`tapeflow produce --exchange "
        "bybit|okx`) to have pairs.",
    )
    watchlist_strategies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Watchlist strategy files (comma-separated) the watchlist service trades "
        "as hedged paper pairs (`tapeflow cross-venue --strategy`): xv.signals, xv.orders, xv.funding, xv.pairs.",
    )
    watchlist_instrument_rules: Path | None = Field(
        default=None,
        description="The venues' lot steps and minimums (`tapeflow watchlist rules --out FILE`) for "
        "the watchlist strategies' pairs (`cross-venue --instrument-rules`); unset: unrounded quantities.",
    )

    @field_validator("strategies", "watchlist_strategies", mode="before")
    @classmethod
    def _split_strategy_lists(cls, v: Any) -> Any:
        return _split_words(v)

    @field_validator("watchlist_instrument_rules", mode="before")
    @classmethod
    def _no_rules_file(cls, v: Any) -> Any:
        return _empty_is_unset(v)


class UiSettings(BaseModel):
    """Whether `up` runs the web UI and where it listens."""

    ui: bool = Field(
        default=True,
        description="`up` also runs the web UI (`tapeflow ui`): order-flow charts, market "
        "overview and the watchlist desk; its login URL (with the token) is printed by `up`.",
    )
    ui_host: str = Field(
        default="127.0.0.1",
        description="Where the web UI listens: loopback unless you mean to "
        "expose it (every request needs the token of TAPEFLOW_HOME/secrets/ui-token either way).",
    )
    ui_port: int = Field(default=0, ge=0, le=65535, description="Web UI port; 0 = a free one (printed by `up`).")


class BinanceAccountSettings(BaseModel):
    """The Binance key and endpoints `execute --mode testnet|live` trades with."""

    binance_api_key: SecretStr | None = Field(
        default=None, description="Binance API key; only `execute --mode testnet|live` uses it."
    )
    binance_api_secret: SecretStr | None = Field(default=None, description="Binance API secret of that key.")
    binance_rest_url: str | None = Field(
        default=None, description="Binance USD-M REST base for `execute --mode testnet|live` (default: the mode's)."
    )
    binance_ws_url: str | None = Field(
        default=None, description="Binance USD-M websocket base for the user-data stream (default: the mode's)."
    )
    binance_spot_rest_url: str | None = Field(
        default=None,
        description="Binance spot REST base where `execute --mode live` checks the key's permissions "
        "(GET /sapi/v1/account/apiRestrictions; default https://api.binance.com).",
    )


class NotifySettings(BaseModel):
    """`tapeflow notify`: each channel is on when its secret is set (tapeflow_notify/channels.py)."""

    telegram_bot_token: SecretStr | None = Field(default=None, description="`tapeflow notify`: Telegram bot token.")
    telegram_chat_id: str | None = Field(default=None, description="Chat the Telegram bot writes to.")
    telegram_api_url: str = Field(
        default="https://api.telegram.org",
        pattern=r"^https?://[^/\s]+",
        description="Telegram Bot API base (a proxy, or a local server in tests).",
    )
    discord_webhook_url: SecretStr | None = Field(default=None, description="`tapeflow notify`: Discord webhook.")
    notify_webhook_url: SecretStr | None = Field(default=None, description="Generic webhook: JSON POST per event.")
    notify_rate_per_minute: int = Field(
        default=20, ge=1, le=600, description="Messages per minute per channel; the rest is summarised."
    )
    notify_events: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["signals", "fills", "positions", "risk.events"],
        description="Topics whose events are notified (comma-separated); add `features` for the market alerts.",
    )
    notify_alert_thresholds: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="Market-alert thresholds as name=value pairs, e.g. `oi_spike_z=4,cooldown_s=600` "
        "(tapeflow_notify/market_alerts.py; unset names keep their defaults).",
    )

    @field_validator(
        "telegram_bot_token", "telegram_chat_id", "discord_webhook_url", "notify_webhook_url", mode="before"
    )
    @classmethod
    def _unset_channel(cls, v: Any) -> Any:
        return _empty_is_unset(v)

    @field_validator("notify_events", mode="before")
    @classmethod
    def _split_events(cls, v: Any) -> Any:
        return _split_words(v)

    @field_validator("notify_alert_thresholds", mode="before")
    @classmethod
    def _split_thresholds(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        out: dict[str, str] = {}
        for pair in (s for s in re.split(r"[,\s]+", v) if s):
            name, sep, value = pair.partition("=")
            if not sep or not name or not value:
                raise ValueError(f"expected name=value, got {pair!r}")
            out[name] = value
        return out

    @field_validator("notify_events")
    @classmethod
    def _known_events(cls, v: list[str]) -> list[str]:
        known = ("signals", "fills", "positions", "risk.events", "features")
        unknown = [e for e in v if e not in known]
        if unknown:
            raise ValueError(f"unknown event topic(s) {', '.join(unknown)}: expected some of {', '.join(known)}")
        return v


class Settings(
    NotifySettings,
    BinanceAccountSettings,
    UiSettings,
    StrategySettings,
    ConsumerSettings,
    MarketDataSettings,
    DatabaseSettings,
    BrokerSettings,
    ProcessSettings,
    BaseSettings,
):
    """Validated configuration shared by the CLI, the stack supervisor and every service.

    Its fields come from the groups above (one attribute per setting, `TAPEFLOW_<NAME>` in the environment);
    this class owns where they are read from and how they are shown.
    """

    model_config = SettingsConfigDict(
        env_prefix="TAPEFLOW_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        validate_default=True,
    )

    # --- sources -------------------------------------------------------------------------------
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        yaml_path = _CONFIG_FILE_OVERRIDE or os.environ.get("TAPEFLOW_CONFIG")
        if yaml_path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        sources.append(file_secret_settings)
        return tuple(sources)

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        """`TAPEFLOW_<NAME>_FILE=/path` reads a secret from a file (Docker/K8s secrets style)."""
        if not isinstance(data, dict):
            return data
        for name in (
            "database_url",
            "writer_password",
            "readonly_password",
            "binance_api_key",
            "binance_api_secret",
            "telegram_bot_token",
            "discord_webhook_url",
            "notify_webhook_url",
        ):
            path = os.environ.get(f"TAPEFLOW_{name.upper()}_FILE")
            if path and not data.get(name):
                try:
                    data[name] = Path(path).read_text().strip()
                except OSError as exc:
                    raise ValueError(f"TAPEFLOW_{name.upper()}_FILE: cannot read {path}: {exc.strerror}") from None
        return data

    _config_file: str | None = PrivateAttr(default=None)

    @property
    def config_file(self) -> str | None:
        """The YAML file these settings were read from, if any."""
        return self._config_file

    # --- derived -------------------------------------------------------------------------------
    def masked(self) -> dict[str, Any]:
        """Settings as a dict safe to print: secrets replaced, passwords in URLs hidden."""
        out: dict[str, Any] = {}
        for key, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                # a database URL keeps its host visible; webhook URLs carry their token in the path
                value = mask_url(raw) if key == "database_url" else "********"
            elif isinstance(value, Path):
                value = str(value)
            out[key] = value
        return out


def mask_url(url: str) -> str:
    """Hide the password part of a URL (`postgresql://user:***@host/db`)."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


_CONFIG_FILE_OVERRIDE: str | None = None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate settings, turning any problem into a one-line `ConfigError`.

    The YAML path is handed to the settings sources for this one construction only (no global
    environment change); `Settings.config_file` remembers it so child processes can be given it.
    """
    global _CONFIG_FILE_OVERRIDE
    path = str(config_file) if config_file is not None else os.environ.get("TAPEFLOW_CONFIG")
    if path and (not Path(path).is_file() or not os.access(path, os.R_OK)):
        where = "config file" if config_file is not None else "TAPEFLOW_CONFIG="
        raise ConfigError(f"{where}{' ' if config_file is not None else ''}{path} is not a readable file")
    _CONFIG_FILE_OVERRIDE = path
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None
    except Exception as exc:  # YAML syntax errors, unreadable .env, ...
        raise ConfigError(f"invalid configuration: {exc}".splitlines()[0]) from None
    finally:
        _CONFIG_FILE_OVERRIDE = None
    settings._config_file = path
    return settings


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        where = f"{loc} (TAPEFLOW_{loc.split('.')[0].upper()})" if loc != "config" else loc
        parts.append(f"{where}: {msg}")
    return "invalid configuration: " + "; ".join(parts)
