"""Every command shown in Getting started and the tutorials runs: the blocks marked runnable run here, on the
bundled recording or generated data, in a fresh working directory and TAPEFLOW_HOME per page (conventions:
docs/development/docs.md). A page block identical to one of the README's is walked by test_readme_walk.py
and not run twice."""

from __future__ import annotations

import pytest

from tests.docs.runnable import README_BLOCKS, REPO, Session, console_blocks, runnable_blocks, tutorial_pages

PAGES = tutorial_pages()
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


@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", sorted(OWN), ids=[str(p.relative_to(REPO / "docs")) for p in sorted(OWN)])
def test_runnable_blocks_of_the_page_run(page):
    blocks = OWN[page]
    session = Session()
    try:
        results = session.run_blocks(blocks)
        failed = [r for r in results if r.returncode != 0]
        assert not failed and len(results) == sum(len(b.commands) for b in blocks), session.report()
    finally:
        session.close()
