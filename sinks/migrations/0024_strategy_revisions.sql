-- The config service: every registered revision of a strategy file, and every rollout step with who
-- and why. The state the engine follows lives on the compacted topic config.rollouts (the latest per
-- strategy); these tables are its history and the source of revision numbers.
--
-- A revision number is monotonic per strategy name, starting at 1; registering a file whose content
-- validates to a config_hash already registered under that name returns the existing revision
-- (unique (name, config_hash)), so re-registering is idempotent. Revision 0 means "an unregistered
-- file" on the records that carry config_rev and is never stored here. Small tables written by hand
-- steps: not partitioned, kept forever.
CREATE TABLE strategy_revisions (
    name        text        NOT NULL,
    rev         integer     NOT NULL CHECK (rev >= 1),
    config_hash text        NOT NULL,
    content     text        NOT NULL,
    created_at  timestamptz NOT NULL,
    created_by  text        NOT NULL,
    note        text        NOT NULL DEFAULT '',
    CONSTRAINT strategy_revisions_pkey PRIMARY KEY (name, rev),
    CONSTRAINT strategy_revisions_name_hash_key UNIQUE (name, config_hash)
);
COMMENT ON TABLE strategy_revisions IS 'Registered strategy revisions: monotonic rev per name, one per distinct config_hash, with the file''s text.';

-- One row per rollout step: register (a new revision), promote (a revision made active on every
-- symbol), canary (a candidate on a few symbols beside the active one), finish (the canary made
-- active), rollback (the canary dropped, or the active revision put back, by hand) and auto_rollback
-- (the guardrail controller dropped a canary that breached a guard). actor is the OS user, --as, or
-- guardrail; scope describes the canary's symbols; seq is the config.rollouts state the step published.
CREATE TABLE strategy_rollouts_audit (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    time        timestamptz NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('register', 'promote', 'canary', 'finish', 'rollback', 'auto_rollback')),
    strategy    text        NOT NULL,
    from_rev    integer,
    to_rev      integer,
    scope       text        NOT NULL DEFAULT '',
    reason      text        NOT NULL DEFAULT '',
    seq         bigint,
    CONSTRAINT strategy_rollouts_audit_pkey PRIMARY KEY (id)
);
COMMENT ON TABLE strategy_rollouts_audit IS 'Every strategy rollout step (register, promote, canary, finish, rollback, auto_rollback) with who and why.';
CREATE INDEX strategy_rollouts_audit_strategy_time_idx ON strategy_rollouts_audit (strategy, time);
