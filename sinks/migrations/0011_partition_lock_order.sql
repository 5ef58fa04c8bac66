-- tapeflow_ensure_partitions takes the parent's lock before any partition's.
--
-- Why: a query over a partitioned table locks the parent, then each partition. The function locked
-- partitions first (the DEFAULT partition it reads to find misplaced rows, a partition it fills
-- before attaching) and the parent afterwards, so a dashboard query or an audit running while a
-- sink made a new day's partition could deadlock with it; PostgreSQL then aborted one of them
-- (seen in the test suite under load: "deadlock detected" on SELECT count(*) FROM depth_updates).
-- Now the first partition to create locks the parent ACCESS EXCLUSIVE first (readers wait at most
-- the few milliseconds a partition takes to create; lock_timeout 10 s as before). Nothing happens
-- when every partition exists, the common case.

CREATE OR REPLACE FUNCTION tapeflow_ensure_partitions(parent text, from_time timestamptz, to_time timestamptz)
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
    locked   boolean := false;
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
            IF NOT locked THEN
                -- the parent first, before any partition: readers lock the parent, then its partitions
                EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', parent);
                locked := true;
            END IF;
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
