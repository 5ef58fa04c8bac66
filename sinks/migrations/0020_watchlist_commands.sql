-- Operator commands to the watchlist traders: what the web UI's desk publishes on xv.commands
-- (open a hedged pair by hand, close one: status requested, with who and why) and each trader's answer
-- (done or rejected, with the event time it acted at and what it did), stored by the sink. The primary
-- key is the command id and the status, so a re-delivered request or answer is one row and a command's
-- request and answer are two. A small table written by hand-clicks: not partitioned, kept forever.

CREATE TABLE xv_commands (
    command_id     text             NOT NULL,  -- the desk's action id (ui_actions.action_id)
    status         text             NOT NULL,  -- requested | done | rejected
    action         text             NOT NULL,  -- open | close
    strategy       text             NOT NULL,
    coin           text             NOT NULL,
    sell_venue     text,
    sell_symbol    text,
    buy_venue      text,
    buy_symbol     text,
    pair_id        text,
    notional_usd   double precision,
    shown_spread   double precision,
    shown_time     timestamptz,
    requested_time timestamptz      NOT NULL,
    acted_time     timestamptz,
    who            text             NOT NULL,
    reason         text             NOT NULL,
    detail         text,
    CONSTRAINT xv_commands_pkey PRIMARY KEY (command_id, status)
);
COMMENT ON TABLE xv_commands IS 'xv_commands: operator commands to the watchlist traders (open/close a hedged pair) with who and why, and the traders'' answers, from xv.commands.';
CREATE INDEX xv_commands_requested_time_idx ON xv_commands (requested_time);
CREATE INDEX xv_commands_pair_idx ON xv_commands (pair_id);
