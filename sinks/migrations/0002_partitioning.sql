-- Time partitioning for plain PostgreSQL (no TimescaleDB).
--
-- Tables are declared once, as ordinary tables, in the later migrations. On plain PostgreSQL each
-- time-series table is then turned into a RANGE-partitioned table by tapeflow_partition_table();
-- on TimescaleDB the NNNN_*.timescale.sql twin turns the same ordinary table into a hypertable
-- instead (a partitioned table cannot become a hypertable). One column list, two storage engines.
--
-- Partitions are created ahead of time by tapeflow_ensure_partitions(), which the sink calls at
-- start and then hourly (sinks/partitions.py), never per flush. Every partitioned table also has a
-- DEFAULT partition, so a row whose partition does not exist yet (a late backfill, a skewed clock)
-- is stored instead of failing the batch; tapeflow_default_partition_rows() reports such rows and
-- creating the missing partition moves them out of the DEFAULT partition.
--
-- Partition bounds are UTC calendar days or months: these functions pin TimeZone to UTC so that
-- date_trunc and interval arithmetic never follow the session's time zone.

CREATE TABLE tapeflow_partitioning (
    table_name  text PRIMARY KEY,
    time_column text NOT NULL,
    granularity text NOT NULL CHECK (granularity IN ('day', 'month'))
);
COMMENT ON TABLE tapeflow_partitioning IS
    'Time-partitioned tables (plain PostgreSQL only; empty on TimescaleDB, where hypertables are used).';

-- Every partition of every registered table with its UTC range (NULL bounds: the DEFAULT partition).
CREATE VIEW tapeflow_partitions AS
SELECT p.table_name,
       c.relname::text AS partition_name,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM $re$FROM \('([^']+)'\)$re$)::timestamptz AS range_start,
       substring(pg_get_expr(c.relpartbound, c.oid) FROM $re$TO \('([^']+)'\)$re$)::timestamptz AS range_end,
       pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' AS is_default
FROM tapeflow_partitioning p
JOIN pg_inherits i ON i.inhparent = to_regclass(p.table_name)
JOIN pg_class c ON c.oid = i.inhrelid;

CREATE FUNCTION tapeflow_partition_name(parent text, range_start timestamptz, granularity text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET TimeZone = 'UTC'
AS $$
    SELECT parent || '_p' || to_char(range_start, CASE granularity WHEN 'day' THEN 'YYYYMMDD' ELSE 'YYYYMM' END)
$$;

-- Create every missing partition of `parent` whose range intersects [from_time, to_time]; returns
-- the names created (none when all exist, so calling it again is harmless). Rows already sitting in
-- the DEFAULT partition inside a new range are moved into the new partition (PostgreSQL refuses to
-- create a partition while the DEFAULT partition holds rows that belong to it).
-- SECURITY DEFINER: creating partitions needs ownership of the parent, and the sink runs as
-- tapeflow_writer; the function only ever creates partitions of registered tables.
CREATE FUNCTION tapeflow_ensure_partitions(parent text, from_time timestamptz, to_time timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
SET lock_timeout = '10s'
AS $$
DECLARE
    cfg      tapeflow_partitioning%ROWTYPE;
    step     interval;
    lo       timestamptz;
    hi       timestamptz;
    part     text;
    dflt     text;
    in_dflt  boolean;
BEGIN
    SELECT * INTO cfg FROM tapeflow_partitioning WHERE table_name = parent;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tapeflow: % is not a time-partitioned table', parent
            USING HINT = 'registered tables: see tapeflow_partitioning';
    END IF;
    IF from_time IS NULL OR to_time IS NULL OR to_time < from_time THEN
        RAISE EXCEPTION 'tapeflow: bad partition range [%, %]', from_time, to_time;
    END IF;
    step := ('1 ' || cfg.granularity)::interval;
    dflt := parent || '_default';
    -- one creator per table at a time (two sinks starting together)
    PERFORM pg_advisory_xact_lock(hashtext('tapeflow_partitions'), hashtext(parent));
    lo := date_trunc(cfg.granularity, from_time);
    WHILE lo <= to_time LOOP
        hi := lo + step;
        part := tapeflow_partition_name(parent, lo, cfg.granularity);
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)',
                           dflt, cfg.time_column, cfg.time_column)
                INTO in_dflt USING lo, hi;
            IF in_dflt THEN
                EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
                EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *) '
                               'INSERT INTO %I SELECT * FROM moved',
                               dflt, cfg.time_column, cfg.time_column, part) USING lo, hi;
                EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                               parent, part, lo, hi);
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               part, parent, lo, hi);
            END IF;
            RETURN NEXT part;
        END IF;
        lo := hi;
    END LOOP;
END
$$;

-- Drop the partitions of `parent` that end at or before `cutoff` (retention on plain PostgreSQL;
-- TimescaleDB uses add_retention_policy). The DEFAULT partition is never dropped.
CREATE FUNCTION tapeflow_drop_partitions_before(parent text, cutoff timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
SET lock_timeout = '10s'
AS $$
DECLARE
    part text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tapeflow_partitioning WHERE table_name = parent) THEN
        RAISE EXCEPTION 'tapeflow: % is not a time-partitioned table', parent;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('tapeflow_partitions'), hashtext(parent));
    FOR part IN
        SELECT partition_name FROM tapeflow_partitions
        WHERE table_name = parent AND NOT is_default AND range_end <= cutoff
        ORDER BY range_start
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
END
$$;

-- Rows stored in DEFAULT partitions, per table: normally none. Rows here mean a partition was
-- missing when they arrived; tapeflow_ensure_partitions over [first_time, last_time] moves them.
CREATE FUNCTION tapeflow_default_partition_rows()
RETURNS TABLE (table_name text, row_count bigint, first_time timestamptz, last_time timestamptz)
LANGUAGE plpgsql
STABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    cfg tapeflow_partitioning%ROWTYPE;
BEGIN
    FOR cfg IN SELECT * FROM tapeflow_partitioning ORDER BY table_name LOOP
        IF to_regclass(cfg.table_name || '_default') IS NULL THEN
            CONTINUE;
        END IF;
        table_name := cfg.table_name;
        EXECUTE format('SELECT count(*), min(%I), max(%I) FROM %I',
                       cfg.time_column, cfg.time_column, cfg.table_name || '_default')
            INTO row_count, first_time, last_time;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Turn the ordinary, empty table `tbl` into a RANGE-partitioned table on `time_column` with a
-- DEFAULT partition, keeping its columns, defaults, checks, comments, and its constraints and
-- indexes under their original names; register it; create the partitions from one period back
-- to `premake` periods ahead. Called by the plain-PostgreSQL branch of the table migrations only.
CREATE FUNCTION tapeflow_partition_table(tbl text, time_column text, granularity text, premake integer)
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    staged      text := tbl || '__unpartitioned';
    statements  text[] := '{}';
    stmt        text;
    tbl_comment text;
    nonempty    boolean;
    step        interval := ('1 ' || granularity)::interval;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = tbl::regclass) <> 'r' THEN
        RAISE EXCEPTION 'tapeflow: % is not an ordinary table', tbl;
    END IF;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', tbl) INTO nonempty;
    IF nonempty THEN
        RAISE EXCEPTION 'tapeflow: % has rows; only an empty table is converted', tbl;
    END IF;
    -- constraints (primary key, unique) and the other indexes, re-created by name afterwards;
    -- pg_get_indexdef names the table as public.<tbl>, which will be the partitioned table
    SELECT coalesce(array_agg(format('ALTER TABLE %I ADD CONSTRAINT %I %s', tbl, conname,
                                     pg_get_constraintdef(oid)) ORDER BY conname), '{}')
      INTO statements
      FROM pg_constraint
     WHERE conrelid = tbl::regclass AND contype IN ('p', 'u', 'x');
    SELECT statements || coalesce(array_agg(pg_get_indexdef(i.indexrelid) ORDER BY i.indexrelid), '{}')
      INTO statements
      FROM pg_index i
     WHERE i.indrelid = tbl::regclass
       AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid);
    tbl_comment := obj_description(tbl::regclass, 'pg_class');

    EXECUTE format('ALTER TABLE %I RENAME TO %I', tbl, staged);
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS '
                   'INCLUDING STORAGE INCLUDING GENERATED) PARTITION BY RANGE (%I)', tbl, staged, time_column);
    EXECUTE format('DROP TABLE %I', staged);
    FOREACH stmt IN ARRAY statements LOOP
        EXECUTE stmt;
    END LOOP;
    IF tbl_comment IS NOT NULL THEN
        EXECUTE format('COMMENT ON TABLE %I IS %L', tbl, tbl_comment);
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tbl || '_default', tbl);

    INSERT INTO tapeflow_partitioning (table_name, time_column, granularity) VALUES (tbl, time_column, granularity);
    PERFORM tapeflow_ensure_partitions(tbl, now() - step, now() + premake * step);
END
$$;

REVOKE ALL ON FUNCTION tapeflow_ensure_partitions(text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION tapeflow_drop_partitions_before(text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION tapeflow_partition_table(text, text, text, integer) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tapeflow_writer') THEN
        GRANT EXECUTE ON FUNCTION tapeflow_ensure_partitions(text, timestamptz, timestamptz) TO tapeflow_writer;
        GRANT EXECUTE ON FUNCTION tapeflow_drop_partitions_before(text, timestamptz) TO tapeflow_writer;
    END IF;
END
$$;
