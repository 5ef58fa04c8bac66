"""Headless Chromium for the report tests: `--dump-dom`, `--screenshot`, and a small DevTools client.

Debian's `chromium` (deploy/bootstrap.sh installs it as an optional package). The DevTools client
speaks the Chrome DevTools Protocol over the browser's loopback websocket (`websockets`, already a
dependency) so a test can move the mouse, click, read the page and see every network request.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--hide-scrollbars",
    "--disable-extensions",
    "--mute-audio",
]


def _env(profile: str) -> dict[str, str]:
    """Chromium's environment: TMPDIR inside its profile, which is removed after it. Chromium leaves its
    singleton socket directories (``org.chromium.Chromium.*``) in TMPDIR, and a test writes nowhere else."""
    return {**os.environ, "TMPDIR": profile}


def run_chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="tapeflow-chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
            env=_env(profile),
        )


def dump_dom(page: Path) -> str:
    """The DOM after the page's scripts ran (virtual time lets timers settle)."""
    return run_chromium("--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri()).stdout


def screenshot(page: Path, out: Path, width: int = 1400, height: int = 2400) -> Path:
    run_chromium(
        "--virtual-time-budget=3000", f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri()
    )
    return out


class DevTools:
    """One headless browser with one page, driven over the DevTools protocol."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self._size = (width, height)
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> DevTools:
        from websockets.sync.client import connect

        self._profile = tempfile.mkdtemp(prefix="tapeflow-chromium-")
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={self._profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--window-size={self._size[0]},{self._size[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(self._profile),
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stderr], daemon=True).start()
        self._stack = contextlib.ExitStack()
        try:
            deadline = time.monotonic() + 30
            url = None
            seen: list[str] = []  # what chromium said before, for the error (seen once in a loaded suite)
            while url is None:
                try:
                    line = lines.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    raise RuntimeError(
                        f"chromium did not open its DevTools endpoint within 30 s (exit code "
                        f"{self.proc.poll()}; its stderr: {seen[-5:]})"
                    ) from None
                seen.append(line.strip()[:200])
                m = re.search(r"DevTools listening on (ws://\S+)", line)
                url = m.group(1) if m else None
            self.ws = self._stack.enter_context(connect(url, max_size=None, open_timeout=10))
            target = self.call("Target.createTarget", session=False, url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", session=False, targetId=target, flatten=True)["sessionId"]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self._profile, ignore_errors=True)

    def call(self, method: str, session: bool = True, timeout: float = 30, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev["method"] == method:
                    return ev
            self.events.append(json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01))))

    def open(self, page: Path) -> None:
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=page.resolve().as_uri())
        self.wait_event("Page.loadEventFired")

    def goto(self, url: str, timeout: float = 30) -> None:
        """Navigate to an http(s) URL and wait for its load event (redirects followed)."""
        if not getattr(self, "_enabled", False):
            for domain in ("Page", "Network", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            self._enabled = True
        self.events = [ev for ev in self.events if ev["method"] != "Page.loadEventFired"]
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", timeout)

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Poll ``expression`` in the page until it is truthy; returns its value (the test's assertions
        say why when it never is)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.05)

    def screenshot(self, out: Path) -> Path:
        """A PNG of the whole page at ``out``: the window is made as tall as the page for the shot (a
        capture "beyond the viewport" leaves some canvases blank), then restored."""
        import base64

        metrics = self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=int(size["width"]),
            height=int(size["height"]),
            deviceScaleFactor=1,
            mobile=False,
        )
        try:
            self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(1))))")
            data = self.call("Page.captureScreenshot", format="png")["data"]
        finally:
            self.call("Emulation.clearDeviceMetricsOverride")
        out.write_bytes(base64.b64decode(data))
        return out

    def evaluate(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def rect(self, selector: str) -> dict[str, float]:
        """Viewport rectangle of an element, scrolled into view first."""
        return self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            "return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
        )

    def mouse(self, kind: str, x: float, y: float, buttons: int = 0, button: str = "none") -> None:
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, buttons=buttons, button=button, clickCount=1)

    def requests(self) -> list[str]:
        """Every URL the page asked for (including requests the browser then blocked)."""
        return [ev["params"]["request"]["url"] for ev in self.events if ev["method"] == "Network.requestWillBeSent"]

    def blocked(self) -> dict[str, str]:
        """URL -> why the browser refused to load it (e.g. "csp")."""
        urls = {
            ev["params"]["requestId"]: ev["params"]["request"]["url"]
            for ev in self.events
            if ev["method"] == "Network.requestWillBeSent"
        }
        return {
            urls[ev["params"]["requestId"]]: ev["params"].get("blockedReason", ev["params"].get("errorText"))
            for ev in self.events
            if ev["method"] == "Network.loadingFailed" and ev["params"]["requestId"] in urls
        }

    def problems(self) -> list[str]:
        """Uncaught exceptions, console errors and browser log errors (CSP violations land there)."""
        out = []
        for ev in self.events:
            p = ev.get("params", {})
            if ev["method"] == "Runtime.exceptionThrown":
                out.append(str(p["exceptionDetails"]))
            elif ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(str(p.get("args")))
            elif ev["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(p["entry"]["text"])
        return out
