"""Static checks of every migration file with PostgreSQL's own parser (pglast = libpg_query).

Why: CI has no TimescaleDB, so the `.timescale.sql` files never execute there. Parsing them with the
real grammar catches syntax errors, including inside DO blocks and plpgsql function bodies (whose
embedded statements libpg_query parses too), and the AST lets us check that the TimescaleDB branch
agrees with the plain one: same roll-up columns, hypertables on the partitioned tables' time
columns, compression keys covering each primary key, no retention job left (sinks/retention.py drops).
"""

from __future__ import annotations

import json

import pytest

pglast = pytest.importorskip("pglast", reason="pglast (libpg_query) is a test dependency: pip install 'pglast>=7'")
from pglast import ast  # noqa: E402 - after the skip that names the missing test dependency
from pglast.parser import ParseError, parse_plpgsql_json, parse_sql  # noqa: E402

from sinks.migrate import load_migrations  # noqa: E402
from sinks.partitions import PLANS  # noqa: E402

# --- the validator ----------------------------------------------------------------------------------


def _defelem(options, name):
    for opt in options or ():
        if isinstance(opt, ast.DefElem) and opt.defname == name:
            return opt.arg
    return None


def _plpgsql_sources(stmt, text: str) -> list[str]:
    """CREATE FUNCTION statements (as plpgsql source) to parse for a DO block or plpgsql function."""
    if isinstance(stmt, ast.DoStmt):
        body = _defelem(stmt.args, "as").sval
        return [
            f"CREATE FUNCTION tapeflow_do_block() RETURNS void LANGUAGE plpgsql AS $tapeflow_do${body}$tapeflow_do$"
        ]
    if isinstance(stmt, ast.CreateFunctionStmt):
        lang = _defelem(stmt.options, "language")
        if lang is not None and lang.sval == "plpgsql":
            return [text]
    return []


def _sql_function_bodies(stmt) -> list[str]:
    if isinstance(stmt, ast.CreateFunctionStmt):
        lang = _defelem(stmt.options, "language")
        body = _defelem(stmt.options, "as")
        if lang is not None and lang.sval == "sql" and body is not None:
            return [item.sval for item in body]
    return []


def validate_sql(text: str) -> list:
    """Parse a migration: every statement, every DO/plpgsql body, every SQL function body.

    Returns the top-level statements; raises pglast ParseError on the first syntax error.
    """
    raw = parse_sql(text)
    for r in raw:
        stmt_text = (
            text.encode()[r.stmt_location : r.stmt_location + r.stmt_len].decode()
            if r.stmt_len
            else text.encode()[r.stmt_location :].decode()
        )
        for source in _plpgsql_sources(r.stmt, stmt_text):
            parse_plpgsql_json(source)
        for body in _sql_function_bodies(r.stmt):
            parse_sql(body)
    return [r.stmt for r in raw]


def _plpgsql_queries(text: str) -> list[str]:
    """The SQL each DO block of `text` runs (PERFORM/embedded statements), in order."""
    out = []

    def walk(node):
        if isinstance(node, dict):
            expr = node.get("PLpgSQL_expr")
            if expr and expr.get("parseMode") == 0:
                out.append(expr["query"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for r in parse_sql(text):
        if isinstance(r.stmt, ast.DoStmt):
            body = _defelem(r.stmt.args, "as").sval
            walk(json.loads(parse_plpgsql_json(f"CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $b${body}$b$")))
    return out


# --- helpers over the AST -----------------------------------------------------------------------------

MIGRATIONS = load_migrations()


def _by_version():
    out: dict[int, dict[bool, str]] = {}
    for m in MIGRATIONS:
        out.setdefault(m.version, {})[m.timescale] = m.sql
    return out


def _const(node):
    if isinstance(node, ast.A_Const):
        if isinstance(node.val, ast.String):
            return node.val.sval
        if isinstance(node.val, ast.Boolean):
            return node.val.boolval
        return node.val.ival
    if isinstance(node, ast.TypeCast):  # INTERVAL '1 day'
        return _const(node.arg)
    if isinstance(node, ast.NamedArgExpr):
        return _const(node.arg)
    raise TypeError(f"not a constant: {node!r}")


def _function_calls(stmts, name: str) -> list[tuple[list, dict]]:
    """Top-level SELECT name(...) calls: (positional args, named args) as Python constants."""
    calls = []
    for s in stmts:
        if isinstance(s, ast.SelectStmt) and s.targetList:
            for target in s.targetList:
                fc = target.val
                if isinstance(fc, ast.FuncCall) and fc.funcname[-1].sval == name:
                    pos = [_const(a) for a in fc.args if not isinstance(a, ast.NamedArgExpr)]
                    named = {a.name: _const(a) for a in fc.args if isinstance(a, ast.NamedArgExpr)}
                    calls.append((pos, named))
    return calls


def _tables(stmts) -> dict[str, dict]:
    """CREATE TABLE name -> {'columns': [...], 'pkey': [...]}."""
    out = {}
    for s in stmts:
        if isinstance(s, ast.CreateStmt):
            cols, pkey = [], []
            for elt in s.tableElts:
                if isinstance(elt, ast.ColumnDef):
                    cols.append(elt.colname)
                elif isinstance(elt, ast.Constraint) and elt.contype == pglast.enums.ConstrType.CONSTR_PRIMARY:
                    pkey = [k.sval for k in elt.keys]
            out[s.relation.relname] = {"columns": cols, "pkey": pkey}
    return out


def _output_names(select: ast.SelectStmt) -> list[str]:
    names = []
    for t in select.targetList:
        if t.name:
            names.append(t.name)
        elif isinstance(t.val, ast.ColumnRef):
            names.append(t.val.fields[-1].sval)
        else:
            raise AssertionError(f"unnamed output column {t.val!r}")
    return names


def _views(stmts) -> dict[str, list[str]]:
    out = {}
    for s in stmts:
        if isinstance(s, ast.ViewStmt):
            out[s.view.relname] = _output_names(s.query)
        elif isinstance(s, ast.CreateTableAsStmt) and s.objtype == pglast.enums.ObjectType.OBJECT_MATVIEW:
            out[s.into.rel.relname] = _output_names(s.query)
        elif isinstance(s, ast.CreateStmt):  # a roll-up the plain engine keeps as a table (0021 trade_levels_1m)
            out[s.relation.relname] = [e.colname for e in s.tableElts if isinstance(e, ast.ColumnDef)]
    return out


# --- tests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("migration", MIGRATIONS, ids=[m.key for m in MIGRATIONS])
def test_every_migration_parses_with_the_postgresql_grammar(migration):
    stmts = validate_sql(migration.sql)
    assert stmts, f"{migration.key} has no statements"


@pytest.mark.parametrize(
    "broken",
    [
        "CREATE TABLE t (a int,, b int);",
        "SELECT create_hypertable('trades' 'trade_time');",
        "DO $$ BEGIN IF true THEN CREATE TABLE t (a int,, b int); END IF; END $$;",
        "DO $$ BEGIN PERFORM f(1; END $$;",
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN SELECT FROM WHERE; END $$;",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 FROM FROM $$;",
        "CREATE MATERIALIZED VIEW v WITH (timescaledb.continuous) AS SELECT FROM trades GROUP BY WITH NO DATA;",
    ],
)
def test_the_validator_rejects_syntax_errors(broken):
    with pytest.raises(ParseError):
        validate_sql(broken)


def test_validator_accepts_a_timescale_sample():
    validate_sql(
        "SELECT add_retention_policy('trades', INTERVAL '90 days');\n"
        "DO $$ BEGIN IF to_regclass('x') IS NULL THEN RAISE NOTICE 'x'; END IF; END $$;"
    )


def test_each_timescale_file_pairs_with_a_plain_file():
    for version, files in _by_version().items():
        if True in files:
            assert False in files, f"{version:04d}: a .timescale.sql file needs the plain file of the same version"


def test_hypertables_are_exactly_the_partitioned_tables_on_the_same_time_columns():
    hypertables = {}
    for version, files in _by_version().items():
        if True not in files:
            continue
        plain_tables = _tables(validate_sql(files[False]))
        for (table, column), named in _function_calls(validate_sql(files[True]), "create_hypertable"):
            assert table in plain_tables, f"{table} is made a hypertable in {version:04d} but created elsewhere"
            assert column in plain_tables[table]["columns"]
            assert named["create_default_indexes"] is False  # the BRIN and key indexes come from the plain file
            hypertables[table] = column
    assert hypertables == {t: p.time_column for t, p in PLANS.items()}


def test_plain_partitioning_calls_match_the_plans():
    calls = {}
    for m in MIGRATIONS:
        if m.timescale:
            continue
        for q in _plpgsql_queries(m.sql):
            (stmt,) = [r.stmt for r in parse_sql(q)]
            fc = stmt.targetList[0].val if isinstance(stmt, ast.SelectStmt) and stmt.targetList else None
            if isinstance(fc, ast.FuncCall) and fc.funcname[-1].sval == "tapeflow_partition_table":
                table, column, granularity, premake = (_const(a) for a in fc.args)
                calls[table] = (column, granularity, premake)
    assert calls == {t: (p.time_column, p.granularity, p.premake) for t, p in PLANS.items()}


def test_compression_keys_cover_each_primary_key():
    for files in _by_version().values():
        if True not in files:
            continue
        plain_tables = _tables(validate_sql(files[False]))
        compressed = set()
        for s in validate_sql(files[True]):
            if isinstance(s, ast.AlterTableStmt):
                for cmd in s.cmds:
                    opts = {d.defname: (d.arg.sval if d.arg is not None else None) for d in cmd.def_}
                    if "compress_segmentby" not in opts:
                        continue
                    table = s.relation.relname
                    cols = {c.strip() for c in (opts["compress_segmentby"] + "," + opts["compress_orderby"]).split(",")}
                    assert set(plain_tables[table]["pkey"]) <= cols, f"{table}: compression keys miss part of the key"
                    assert cols <= set(plain_tables[table]["columns"])
                    compressed.add(table)
        hypertables = {pos[0] for pos, _ in _function_calls(validate_sql(files[True]), "create_hypertable")}
        assert compressed == hypertables


def test_retention_is_not_left_to_timescaledb_jobs():
    """0003 created retention jobs (they drop by data time, unguarded); 0006 removes them all, and
    every hypertable starts with a compression job (the configuration adjusts the intervals)."""
    retention_added, compression = {}, {}
    for m in MIGRATIONS:
        if m.timescale:
            stmts = validate_sql(m.sql)
            retention_added.update({pos[0]: m.version for pos, _ in _function_calls(stmts, "add_retention_policy")})
            compression.update({pos[0]: pos[1] for pos, _ in _function_calls(stmts, "add_compression_policy")})
    removers = [m.version for m in MIGRATIONS if m.timescale and "remove_retention_policy(" in m.sql]
    assert retention_added and removers and min(removers) > max(retention_added.values())
    assert set(compression) == set(PLANS)
    assert compression["trades"] == "1 day"


def test_continuous_aggregates_replace_plain_views_with_the_same_columns():
    caggs_seen = 0
    for files in _by_version().values():
        if True not in files:
            continue
        plain = _views(validate_sql(files[False]))
        ts_stmts = validate_sql(files[True])
        dropped = {o[-1].sval for s in ts_stmts if isinstance(s, ast.DropStmt) for o in s.objects}
        for name, columns in _views(ts_stmts).items():
            assert name in plain, f"continuous aggregate {name} has no plain-PostgreSQL view or table"
            assert columns == plain[name], f"{name}: columns differ between the engines"
            assert name in dropped, f"{name}: the plain view or table must be dropped before the aggregate is created"
            caggs_seen += 1
    assert caggs_seen == 4  # bars_5m, bars_1h, cvd_1m, trade_levels_1m
