-- Operator actions taken from the web UI: one row per action, keyed by the action id the
-- UI derives from the form's nonce, so a double click (the same nonce sent twice) is one row and one
-- action: the UI inserts with ON CONFLICT DO NOTHING and acts only when its insert made the row.
-- Who (the UI session and client) and why (the operator's required reason) are kept with what was asked
-- and what came of it. The UI writes here with the writer role; its views read with tapeflow_readonly.
-- A small table written by hand-clicks: not partitioned, kept forever.

CREATE TABLE ui_actions (
    action_id      text        NOT NULL,
    kind           text        NOT NULL,  -- kill_switch | pair_open | pair_close
    params         jsonb       NOT NULL,  -- what was asked (e.g. {"on": true, "flatten": false, "modes": [...]})
    who            text        NOT NULL,  -- the UI session: how it authenticated and from where
    reason         text        NOT NULL CHECK (length(btrim(reason)) > 0),
    requested_time timestamptz NOT NULL,
    status         text        NOT NULL,  -- pending | done | failed
    detail         text,                  -- the outcome (records published, or the error)
    completed_time timestamptz,
    CONSTRAINT ui_actions_pkey PRIMARY KEY (action_id)
);
COMMENT ON TABLE ui_actions IS 'ui_actions: operator actions taken from the web UI, once per action id (the form nonce), with who and why.';
CREATE INDEX ui_actions_requested_time_idx ON ui_actions (requested_time);
