-- TimescaleDB branch of 0007_retention.sql: retention by tapeflow's maintenance, not by policy jobs.
--
-- add_retention_policy drops chunks by data time at its next run, including chunks a backfill or
-- replay is filling right now, so the jobs 0003 created are removed; the sink's maintenance calls
-- tapeflow_drop_chunks_before with the configured cutoff instead, which keeps every chunk from the
-- oldest recently written day on (tapeflow_partition_writes). Compression policies stay jobs
-- (compressing never deletes), with the intervals from the configuration applied by
-- `tapeflow db migrate`/`up` and `tapeflow db retention --apply`.

SELECT remove_retention_policy(h.hypertable_name::regclass, if_exists => true)
FROM timescaledb_information.hypertables h
WHERE h.hypertable_schema = 'public';

CREATE FUNCTION tapeflow_drop_chunks_before(tbl text, cutoff timestamptz, protect_since timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
SET lock_timeout = '10s'
AS $$
DECLARE
    oldest_protected timestamptz;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                   WHERE hypertable_schema = 'public' AND hypertable_name = tbl) THEN
        RAISE EXCEPTION 'tapeflow: % is not a hypertable', tbl;
    END IF;
    SELECT min(day)::timestamptz INTO oldest_protected
    FROM tapeflow_partition_writes WHERE table_name = tbl AND last_write >= protect_since;
    RETURN QUERY SELECT drop_chunks(tbl::regclass, older_than => least(cutoff, coalesce(oldest_protected, cutoff)))::text;
END
$$;

REVOKE ALL ON FUNCTION tapeflow_drop_chunks_before(text, timestamptz, timestamptz) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tapeflow_writer') THEN
        GRANT EXECUTE ON FUNCTION tapeflow_drop_chunks_before(text, timestamptz, timestamptz) TO tapeflow_writer;
    END IF;
END
$$;
