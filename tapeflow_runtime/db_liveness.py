"""Connection settings that notice a dead database link in seconds, on both ends.

A network partition between a service and PostgreSQL drops packets without a reset. Left to the
defaults, the service's write then waits for TCP's retransmissions to give up (``tcp_retries2``: about
15 minutes) while its status says ``ok``, and the server's backend of that connection stays "idle in
transaction" for hours (keepalive after 2 h), holding the row locks of the half-written batch: the
batch written again on a new connection would wait on them. Without this module, a 40-s partition of
the sink's link (the fault suite's) left the sink reporting ``ok`` throughout, never retrying.

`liveness_kwargs` returns what ``psycopg.connect`` needs so that:

- the client aborts a connection whose sent data stays unacknowledged ``timeout_s`` (libpq
  ``tcp_user_timeout``) or that answers no keepalive probe (idle ``timeout_s / 2``, then probes every
  ``timeout_s / 6``, 3 of them), and the service reports the database down and retries;
- the server does the same for its backend (``tcp_user_timeout`` and ``tcp_keepalives_*`` sent as
  session settings in ``options``: user-settable GUCs, so no superuser or server configuration is
  needed, and a user's own TimescaleDB gets them too), so the orphaned transaction is rolled back and
  its locks released within about ``timeout_s`` of the cut.

Options the caller's conninfo already carries are kept; ours are appended.
"""

from __future__ import annotations

import psycopg.conninfo

DEFAULT_TIMEOUT_S = 10.0


def liveness_kwargs(conninfo: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, str | int]:
    idle = max(1, round(timeout_s / 2))
    interval = max(1, round(timeout_s / 6))
    user_timeout_ms = int(timeout_s * 1000)
    server = (
        f"-c tcp_user_timeout={user_timeout_ms} -c tcp_keepalives_idle={idle} "
        f"-c tcp_keepalives_interval={interval} -c tcp_keepalives_count=3"
    )
    existing = psycopg.conninfo.conninfo_to_dict(conninfo).get("options") or ""
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": 3,
        "tcp_user_timeout": user_timeout_ms,
        "options": f"{existing} {server}".strip(),
    }
