-- Research studies: `tapeflow research search` keeps its optuna study in the stack's
-- PostgreSQL so several processes or machines work on one study. optuna creates and owns its tables
-- (as the role that first opens a study, the writer on the embedded stack) in a schema of their own,
-- kept apart from the pipeline's tables; the writer may create there (PostgreSQL 15 no longer lets it
-- create in public) and the read-only role may read the studies. An ordinary schema on both engines.
CREATE SCHEMA IF NOT EXISTS optuna;
COMMENT ON SCHEMA optuna IS 'optuna studies of tapeflow research (tables created by optuna itself).';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tapeflow_writer') THEN
        GRANT USAGE, CREATE ON SCHEMA optuna TO tapeflow_writer;
        GRANT USAGE ON SCHEMA optuna TO tapeflow_readonly;
        ALTER DEFAULT PRIVILEGES FOR ROLE tapeflow_writer IN SCHEMA optuna GRANT SELECT ON TABLES TO tapeflow_readonly;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'tapeflow: cannot grant privileges on schema optuna to tapeflow roles; grant them yourself';
END
$$;
