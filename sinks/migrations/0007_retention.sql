-- Retention that never eats what was just written (both engines).
--
-- Retention drops whole partitions (plain PostgreSQL) or chunks (TimescaleDB) by data time. Data
-- loaded on purpose can be older than any retention (a backfill, a replay of an old session), and a
-- drop by data time alone deleted it while, or right after, it was being loaded. So the sink
-- records, per table and UTC day of data, when it last wrote rows there; maintenance never drops a
-- partition or chunk holding a day written since the sink started (or in the last 24 hours, so a
-- restarted sink also protects what its predecessor wrote).
--
-- What is kept for how long is configuration (`retention:` in the settings, sinks/retention.py),
-- not SQL: the functions below take the cutoff. On TimescaleDB the twin file removes the
-- add_retention_policy jobs of 0003 (they drop by data time, unguarded) and adds the chunk variant.

CREATE TABLE tapeflow_partition_writes (
    table_name text        NOT NULL,
    day        date        NOT NULL,
    last_write timestamptz NOT NULL,
    CONSTRAINT tapeflow_partition_writes_pkey PRIMARY KEY (table_name, day)
);
COMMENT ON TABLE tapeflow_partition_writes IS
    'Per table and UTC day of data: when a sink last wrote rows there. Retention never drops a recently written day.';

-- Partitions of `parent` ending at or before `cutoff`, except those holding a day written at or
-- after `protect_since`. The DEFAULT partition is never dropped.
CREATE FUNCTION tapeflow_droppable_partitions(parent text, cutoff timestamptz, protect_since timestamptz)
RETURNS SETOF text
LANGUAGE sql
STABLE
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
    SELECT p.partition_name
    FROM tapeflow_partitions p
    WHERE p.table_name = parent AND NOT p.is_default AND p.range_end <= cutoff
      AND NOT EXISTS (SELECT 1 FROM tapeflow_partition_writes w
                      WHERE w.table_name = parent AND w.last_write >= protect_since
                        AND w.day::timestamptz < p.range_end AND w.day::timestamptz + interval '1 day' > p.range_start)
    ORDER BY p.range_start
$$;

CREATE FUNCTION tapeflow_drop_partitions_before(parent text, cutoff timestamptz, protect_since timestamptz)
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
    FOR part IN SELECT tapeflow_droppable_partitions(parent, cutoff, protect_since) LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION tapeflow_drop_partitions_before(text, timestamptz, timestamptz) FROM PUBLIC;
-- the unguarded two-argument version of 0002 is not for the sink any more
REVOKE ALL ON FUNCTION tapeflow_drop_partitions_before(text, timestamptz) FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tapeflow_writer') THEN
        GRANT EXECUTE ON FUNCTION tapeflow_drop_partitions_before(text, timestamptz, timestamptz) TO tapeflow_writer;
        REVOKE EXECUTE ON FUNCTION tapeflow_drop_partitions_before(text, timestamptz) FROM tapeflow_writer;
        GRANT SELECT, INSERT, UPDATE ON tapeflow_partition_writes TO tapeflow_writer;
    END IF;
END
$$;
