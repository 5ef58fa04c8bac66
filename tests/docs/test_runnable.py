"""Every command shown in Getting started and the tutorials runs, and each tutorial's expected output is what
really comes out: the blocks marked runnable run here, on the bundled recording or generated data, in a fresh
working directory and TAPEFLOW_HOME per page, and the page's expected-output blocks are compared with their
outputs (conventions, with the `…` placeholder: docs/development/docs.md). A page block identical to one of the
README's is walked by test_readme_walk.py and not run twice.

A tutorial has one shape: Goal, What you need, Time, Steps, Expected output, What next (in that order), and its
Expected output section holds at least one expected-output block that this test compares. A page whose
commands need a service the test cannot reach (a chat) runs with a stand-in pinned by its `Harness` here."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.docs.runnable import (
    DOCS,
    README_BLOCKS,
    REPO,
    Result,
    Session,
    compare,
    console_blocks,
    expected_blocks,
    matches,
    runnable_blocks,
    tutorial_pages,
)

PAGES = tutorial_pages()
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
SHAPE = ["Goal", "What you need", "Time", "Steps", "Expected output", "What next"]
_README = {b.commands for b in README_BLOCKS}
#: pages with runnable blocks of their own (a block the README has too is walked by test_readme_walk.py)
OWN = {p: [b for b in runnable_blocks(p) if b.commands not in _README] for p in PAGES}
OWN = {p: blocks for p, blocks in OWN.items() if blocks}


def test_every_console_block_in_getting_started_and_tutorials_is_marked():
    unmarked = [b.where for page in PAGES for b in console_blocks(page) if not b.marked]
    assert unmarked == [], "mark each as <!-- runnable --> or <!-- not runnable: why -->"
    assert sum(len(runnable_blocks(p)) for p in PAGES) >= 8  # the parser still finds them
    # the blocks left to the README walk are really the README's
    walked = [p.name for p in PAGES if runnable_blocks(p) and p not in OWN]
    assert walked == ["first-backtest.md", "first-replay.md"]


@pytest.mark.parametrize("page", TUTORIALS, ids=[p.name for p in TUTORIALS])
def test_every_tutorial_has_the_shape_and_an_expected_output_that_runs(page):
    text = page.read_text()
    headings = re.findall(r"^## (.+?)\s*$", text, re.M)
    assert headings == SHAPE, f"{page.name}: the ## headings must be {SHAPE}"
    section = text.split("\n## Expected output\n", 1)[1].split("\n## What next\n", 1)[0]
    assert expected_blocks(page, section), f"{page.name}: no <!-- expected output --> block under ## Expected output"
    assert len(expected_blocks(page)) == len(expected_blocks(page, section)), "expected outputs go in their section"
    assert page in OWN, f"{page.name}: nothing runs, so its expected output would not be checked"


def test_the_expected_output_check_matches_what_varies_and_fails_on_a_changed_line():
    page = Path(REPO / "docs" / "tutorials" / "example.md")
    text = "<!-- expected output -->\n```text\n$ tapeflow x\nrun 7 in … s\n…\ndone: 3 trades\n```\n"
    [block] = expected_blocks(page, text)
    assert block.sections == (("tapeflow x", ("run 7 in … s", "…", "done: 3 trades")),)
    ok = "run 7 in 0.4 s\nnoise\nmore noise\ndone: 3 trades\n\n"
    assert compare(block, {"tapeflow x": [ok]}) == []
    assert compare(block, {"tapeflow x": ["run 7 in 0.4 s\ndone: 3 trades  \n"]}) == []  # `…` alone: none too
    [problem] = compare(block, {"tapeflow x": [ok.replace("3 trades", "4 trades")]})
    assert "-done: 3 trades" in problem and "+done: 4 trades" in problem
    assert compare(block, {"tapeflow x": ["run 8 in 0.4 s\ndone: 3 trades\n"]}) != []  # `…` is not a number
    assert compare(block, {"tapeflow x": [ok + "an extra line\n"]}) != []  # nothing after the last line
    assert "not a command the page ran" in compare(block, {})[0]
    assert not matches(["a … b"], "a x\nb\n")  # `…` inside a line stays on the line


# --- stand-ins for what a page's commands reach ------------------------------------------------------------
class Harness:
    """What a page's run needs besides its commands; the default: nothing."""

    pinned: dict[str, str] = {}

    def after(self, result: Result) -> None:
        """Called after each foreground command."""

    def outputs(self) -> dict[str, str]:
        """The named outputs (`<!-- expected output: NAME -->`)."""
        return {}

    def problems(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


class ChatHarness(Harness):
    """alerts.md: Telegram's API and the Discord webhook are a local server that records what it receives,
    and `tapeflow up` replays the bundled recording instead of streaming Binance, without the web UI (nothing
    on the page uses it: one service less to start, probe and stop). After a kill-switch command
    it waits until the messages that follow have arrived (the notifier, and the executor's answer, are
    asynchronous). Its named output `chat` is the text of every Telegram message, one a line."""

    QUIET_S = 3.0  # no new message for this long: the messages of a command have all arrived
    FIRST_S = 30.0  # the first message of a command arrives within this

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []
        self.settled = 0  # requests received up to the end of the last command's wait
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                requests.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.pinned = {
            "TAPEFLOW_SOURCE": "replay:tests/data/binance_futures_ws",
            "TAPEFLOW_TELEGRAM_API_URL": url + "/telegram",
            "TAPEFLOW_DISCORD_WEBHOOK_URL": url + "/discord",
            "TAPEFLOW_UI": "false",
        }

    def after(self, result: Result) -> None:
        if not result.command.startswith("tapeflow kill-switch") or result.returncode != 0:
            return
        start = time.monotonic()  # the command's messages may have come while it ran, or may still come
        while len(self.requests) == self.settled and time.monotonic() - start < self.FIRST_S:
            time.sleep(0.1)
        seen, quiet_since = len(self.requests), time.monotonic()
        while time.monotonic() - quiet_since < self.QUIET_S:
            time.sleep(0.1)
            if len(self.requests) != seen:
                seen, quiet_since = len(self.requests), time.monotonic()
        self.settled = seen

    def _texts(self, prefix: str, key: str) -> list[str]:
        return [body[key] for path, body in self.requests if path.startswith(prefix)]

    def outputs(self) -> dict[str, str]:
        return {"chat": "".join(t + "\n" for t in self._texts("/telegram/", "text"))}

    def problems(self) -> list[str]:
        telegram, discord = self._texts("/telegram/", "text"), self._texts("/discord", "content")
        return [] if telegram == discord else [f"Discord received {discord}, Telegram {telegram}"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ModelReportHarness(Harness):
    """train-a-confidence-model.md: every screenshot of the model report the page shows
    (``![...](../img/model-report*.png)``) is what headless Chromium renders of the report the page's own
    `tapeflow model train` wrote, at the screenshot's size: a screenshot of another model or of an older
    report layout fails. (Rendering is deterministic here: the same page gives the same pixels; a few
    differing pixels are allowed for anti-aliasing.)"""

    PAGE = DOCS / "tutorials" / "train-a-confidence-model.md"
    IMAGE = re.compile(r"!\[[^\]]*\]\(\.\./img/(model-report[\w-]*\.png)\)")
    TOLERANCE = 1e-4  # share of differing pixels

    def __init__(self) -> None:
        self.work: Path | None = None  # the page's working directory (set by the test)
        self.reports: list[str] = []

    def after(self, result: Result) -> None:
        self.reports += re.findall(r"^report: (\S+\.html)$", result.stdout, flags=re.M)

    def problems(self) -> list[str]:
        from PIL import Image, ImageChops

        from tests.support.chromium import CHROMIUM, run_chromium

        shots = self.IMAGE.findall(self.PAGE.read_text())
        if not shots or not self.reports or self.work is None:
            return [f"no report screenshot on the page ({shots}) or no report written ({self.reports})"]
        if CHROMIUM is None:
            return []  # Debian chromium is not installed: the pages' other checks still ran
        problems = []
        page = (self.work / self.reports[-1]).resolve()
        for name in shots:
            shown = Image.open(DOCS / "img" / name).convert("RGB")
            out = self.work / f"rendered-{name}"
            width, height = shown.size
            run_chromium(
                "--virtual-time-budget=3000", f"--window-size={width},{height}", f"--screenshot={out}", page.as_uri()
            )
            rendered = Image.open(out).convert("RGB")
            if rendered.size != shown.size:
                problems.append(f"{name}: {shown.size} on the page, {rendered.size} rendered")
                continue
            diff = ImageChops.difference(shown, rendered).convert("L").point(lambda v: 255 if v else 0)
            share = sum(diff.histogram()[255:]) / (width * height)
            if share > self.TOLERANCE:
                problems.append(
                    f"{name}: {100 * share:.2f} % of its pixels differ from the report rendered now ({out})"
                )
        return problems


HARNESS = {"alerts.md": ChatHarness, "train-a-confidence-model.md": ModelReportHarness}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", sorted(OWN), ids=[str(p.relative_to(REPO / "docs")) for p in sorted(OWN)])
def test_runnable_blocks_of_the_page_run_and_give_its_expected_output(page):
    blocks = OWN[page]
    harness = HARNESS.get(page.name, Harness)()
    session = Session(merge_output=True, pinned=harness.pinned, after=harness.after)
    harness.work = session.work  # type: ignore[attr-defined] - a harness that reads what the page wrote
    try:
        results = session.run_blocks(blocks)
        failed = [r for r in results if not r.ok]
        assert not failed and len(results) == sum(len(b.commands) for b in blocks), session.report()
        problems = [p for e in expected_blocks(page) for p in compare(e, session.outputs(), harness.outputs())]
        assert not problems + harness.problems(), "\n\n".join(problems + harness.problems())
    finally:
        session.close()
        harness.close()
