-- Roles: a writer for sinks, a read-only role for Grafana and reports.
-- Passwords and LOGIN are set by whoever provisions the server (the embedded stack does it itself;
-- on an external server an administrator does), never here: migrations carry no secrets.
-- Creating roles needs CREATEROLE; on a managed server without it this degrades to a notice.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tapeflow_writer') THEN
        CREATE ROLE tapeflow_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tapeflow_readonly') THEN
        CREATE ROLE tapeflow_readonly NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'tapeflow: cannot create roles here (no CREATEROLE); create tapeflow_writer and tapeflow_readonly yourself';
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tapeflow_writer') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO tapeflow_writer, tapeflow_readonly', current_database());
        GRANT USAGE ON SCHEMA public TO tapeflow_writer, tapeflow_readonly;
        -- tables created later by the migration owner are readable/writable by the right roles
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO tapeflow_writer;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT USAGE, SELECT ON SEQUENCES TO tapeflow_writer;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public
            GRANT SELECT ON TABLES TO tapeflow_readonly;
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO tapeflow_readonly;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'tapeflow: cannot grant privileges to tapeflow roles; grant them yourself';
END
$$;
