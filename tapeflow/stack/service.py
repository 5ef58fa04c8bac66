"""What the supervisor needs to know about one service: how to start it and how to tell it is healthy."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass

from tapeflow_runtime.health import Health
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings


@dataclass(frozen=True)
class Launch:
    """A ready-to-spawn command; `user` drops privileges (PostgreSQL refuses to run as root)."""

    argv: list[str]
    address: str
    env: dict[str, str] | None = None
    user: str | None = None
    cwd: str | None = None

    def credentials(self) -> dict:
        """subprocess kwargs that fully become `user`: uid, primary gid and no inherited root groups.

        Dropping only the uid would keep gid 0, and group bits of root-owned directories would then
        deny access that the "other" bits allow.
        """
        return as_user_kwargs(self.user)


def as_user_kwargs(user: str | None) -> dict:
    if user is None:
        return {}
    import pwd

    ent = pwd.getpwnam(user)
    return {"user": ent.pw_uid, "group": ent.pw_gid, "extra_groups": []}


class Service(ABC):
    """A long-running process of the embedded stack (broker, database, and later the apps)."""

    name: str
    #: set when the user points tapeflow at an existing instance: health-checked, never started.
    external: bool = False
    #: the signal that asks for a clean, prompt shutdown (PostgreSQL: SIGINT = "fast" shutdown,
    #: because SIGTERM waits for every client to disconnect).
    stop_signal: int = signal.SIGTERM

    def __init__(self, settings: Settings, paths: StackPaths) -> None:
        self.settings = settings
        self.paths = paths

    @abstractmethod
    def prepare(self) -> Launch:
        """One-time setup (binaries, data directories, ports) and the command to run."""

    #: a service that ends by itself when its work is done (a replay): exit code 0 is "finished".
    finite: bool = False
    #: nothing after it needs it ready (a consumer): the next service starts while it comes up, and
    #: `up` waits for it before the next service that is not concurrent.
    concurrent: bool = False

    @abstractmethod
    def health(self, address: str) -> Health:
        """Cheap health probe against a running instance at `address`."""

    def ready(self, address: str) -> Health:
        """What startup waits for; by default the same as health (an app may be up but degraded)."""
        return self.health(address)

    def health_url(self, address: str) -> str | None:
        """HTTP health endpoint, recorded so `status` can probe the service from another shell."""
        return None

    def bearer_token_file(self):
        """A file holding the token every request of this service needs (its health probe included);
        recorded so `status` can send it from another shell. None: no token."""
        return None

    def after_start(self, address: str) -> None:  # noqa: B027 - an optional hook: most services need none
        """Hook run once the service is healthy (e.g. create roles)."""

    def external_address(self) -> str | None:
        return None
