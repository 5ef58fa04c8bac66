"""The three ways out: Telegram Bot API, a Discord webhook, a generic JSON webhook.

Hand-written on aiohttp (already a dependency) rather than a notification library: each channel is
one JSON POST, and the libraries that bundle many services (apprise) hard-code api.telegram.org and
discord.com, so they could not be pointed at the local server the tests record with, nor at a proxy.
A channel's URL holds its secret (the bot token in the path, the webhook's token), so no error
message built here ever contains a URL: failures are reported by channel name, HTTP status and
exception class only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from tapeflow_notify.messages import Note
from tapeflow_runtime.settings import Settings

TIMEOUT = aiohttp.ClientTimeout(total=10)


class DeliveryError(Exception):
    """A message that did not arrive; the text never contains the channel's URL."""


@dataclass(frozen=True)
class Channel:
    name: str
    _url: str  # secret: never logged, never in an error
    _extra: dict[str, Any]

    def body(self, note: Note) -> dict[str, Any]:
        raise NotImplementedError

    async def send(self, session: aiohttp.ClientSession, note: Note) -> None:
        try:
            async with session.post(
                self._url,
                data=orjson.dumps(self.body(note), default=str),
                headers={"Content-Type": "application/json"},
                timeout=TIMEOUT,
            ) as resp:
                if resp.status >= 300:
                    raise DeliveryError(f"{self.name}: HTTP {resp.status}")
        except DeliveryError:
            raise
        except Exception as exc:  # connection refused, timeout, ...: say what, never where
            raise DeliveryError(f"{self.name}: {type(exc).__name__}") from None

    def __repr__(self) -> str:
        return f"<{self.name} channel>"


class TelegramChannel(Channel):
    def body(self, note: Note) -> dict[str, Any]:
        return {"chat_id": self._extra["chat_id"], "text": note.text, "disable_web_page_preview": True}


class DiscordChannel(Channel):
    def body(self, note: Note) -> dict[str, Any]:
        return {"content": note.text[:2000], "allowed_mentions": {"parse": []}}


class WebhookChannel(Channel):
    def body(self, note: Note) -> dict[str, Any]:
        return {"source": "tapeflow", "kind": note.kind, "text": note.text, "record": note.record}


def channels_from(settings: Settings) -> list[Channel]:
    """Every channel whose secret is set. Telegram needs both the token and the chat id."""
    out: list[Channel] = []
    if settings.telegram_bot_token is not None:
        if not settings.telegram_chat_id:
            raise ValueError("TAPEFLOW_TELEGRAM_BOT_TOKEN is set but TAPEFLOW_TELEGRAM_CHAT_ID is not")
        url = f"{settings.telegram_api_url.rstrip('/')}/bot{settings.telegram_bot_token.get_secret_value()}/sendMessage"
        out.append(TelegramChannel("telegram", url, {"chat_id": settings.telegram_chat_id}))
    if settings.discord_webhook_url is not None:
        out.append(DiscordChannel("discord", settings.discord_webhook_url.get_secret_value(), {}))
    if settings.notify_webhook_url is not None:
        out.append(WebhookChannel("webhook", settings.notify_webhook_url.get_secret_value(), {}))
    return out
