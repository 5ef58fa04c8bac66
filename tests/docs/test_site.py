"""The documentation site builds strictly and offline, and its pages open in headless Chromium without errors.

`mkdocs build --strict` fails on a broken link, a missing anchor or a page left out of the navigation
(mkdocs.yml's `validation`); it builds into a temporary directory, never into the repository.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.docs.runnable import DOCS, REPO
from tests.support.chromium import CHROMIUM, DevTools

MKDOCS = [sys.executable, "-m", "mkdocs"]
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def build(config: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MKDOCS, "build", "--strict", "--config-file", str(config), "--site-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    start = time.monotonic()
    res = build(REPO / "mkdocs.yml", out)
    seconds = time.monotonic() - start
    assert res.returncode == 0, res.stdout + res.stderr
    assert seconds < 60, f"mkdocs build took {seconds:.1f} s"
    print(f"mkdocs build --strict: {seconds:.1f} s")
    return out


def test_the_site_builds_strictly_offline_with_every_page(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") if p.name != "404.html")
    sources = sorted(p.relative_to(DOCS).with_suffix(".html").as_posix() for p in DOCS.rglob("*.md"))
    assert pages == sources
    for page in site.rglob("*.html"):
        html = page.read_text()
        # offline: no web font, script or style fetched from elsewhere (links to other sites are fine)
        assert not re.search(r'<(?:link|script)[^>]+(?:href|src)="https?://', html), page
    assert (site / "img" / "backtest-demo-equity.png").is_file()


def test_a_broken_link_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns("__pycache__"))
    page = docs / "faq.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text((REPO / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}"))
    res = build(config, tmp_path / "site")
    assert res.returncode != 0 and "no-such-page.md" in res.stdout + res.stderr


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """No line on stderr per request: the test's output stays readable."""


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian chromium is not installed (deploy/bootstrap.sh installs it as root: apt-get install chromium)",
)
def test_pages_open_in_chromium_with_title_navigation_and_no_errors(site):
    # served over HTTP, as a user's `make docs-serve` or a web server would: the search worker needs it
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with DevTools() as browser:
            # (page, its title in the navigation and <title>, its heading)
            for path, title, heading in [
                ("index.html", "tapeflow", "tapeflow"),
                (
                    "tutorials/strategy-walk-forward.html",
                    "A strategy to a walk-forward verdict",
                    "A strategy from idea to walk-forward verdict",
                ),
                ("reference/cli.html", "CLI", "CLI"),
            ]:
                browser.events.clear()
                for domain in ("Page", "Network", "Runtime", "Log"):
                    browser.call(f"{domain}.enable")
                browser.call("Page.navigate", url=f"{base}/{path}")
                browser.wait_event("Page.loadEventFired")
                time.sleep(0.5)  # let the theme's scripts (search index, navigation) run
                browser.call("Runtime.evaluate", expression="1")  # drain the events that came meanwhile
                page_title = browser.evaluate("document.title")
                assert page_title.startswith(title) and page_title.endswith("tapeflow"), (path, page_title)
                assert (
                    browser.evaluate("document.querySelector('h1').textContent.replace('¶', '').trim()") == heading
                ), path
                nav = browser.evaluate(
                    "Array.from(document.querySelectorAll('nav.md-nav--primary .md-nav__link'))"
                    ".map(a => a.textContent.trim())"
                )
                assert {"Getting started", "Tutorials", "Reference", "Exchange notes", "Install", "CLI"} <= set(nav), (
                    path,
                    nav,
                )
                failed = [u for u, why in browser.blocked().items()]
                assert failed == [] and browser.problems() == [], (path, failed, browser.problems())
                assert all(u.startswith((base, "data:")) for u in browser.requests()), (
                    path,
                    browser.requests(),
                )  # offline
    finally:
        server.shutdown()


def test_no_page_sends_a_user_to_what_they_do_not_have():
    """A user has the repository, not the team's spec (`DESIGN.md`, `shared/`) or its issue tracker, and
    not the machine the team develops on: no user-facing page (the contributors' `development/` pages
    aside) names them."""
    unwanted = re.compile(r"\bDESIGN\b|\bshared/|\b[Ii]ssue \d+|development machine|\bdev machine")
    pages = [p for p in DOCS.rglob("*.md") if "development" not in p.relative_to(DOCS).parts]
    found = [
        f"{page.relative_to(REPO)}:{n}: {line.strip()[:120]}"
        for page in [*pages, REPO / "README.md"]
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if unwanted.search(line)
    ]
    assert len(pages) > 40 and found == []
