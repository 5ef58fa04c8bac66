-- A dead letter's source coordinates are unique per source record, not per (topic, partition, offset):
-- a topic deleted and created again numbers its records from 0 again, so md.trades[0]@5 after that is
-- a different record from md.trades[0]@5 before it. The key now also holds the digest of the raw bytes: the same source record failing again
-- (a stage reprocessing it after a restart) is still stored once, a different record at the same
-- coordinates is stored too. content_sha256 keeps deduplicating a redelivered dead letter itself.
ALTER TABLE pipeline_errors DROP CONSTRAINT pipeline_errors_source_key;
CREATE UNIQUE INDEX pipeline_errors_source_key
    ON pipeline_errors (source_topic, source_partition, source_offset, stage, sha256(raw_value));
