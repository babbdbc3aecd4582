"""The scraper on the stack's Selenium Grid when every browser slot is busy.

A new session request waits in the hub's queue until a slot frees; a client that gave up
sooner (its per-call timeout) failed the search and left the hub to start a session nobody
used. Checked with the CLI's scrape through the real Grid while the test itself holds every
slot for longer than the scraper's per-call timeout.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from facescale.scraper.browser import make_driver

from .conftest import facescale
from .stack import grid_nodes

pytestmark = pytest.mark.cluster


def _grid(env: dict[str, str]) -> tuple[int, int]:
    """(slots, busy slots) over the Grid's nodes."""
    nodes = grid_nodes(env["FACESCALE_SCRAPER__SELENIUM_GRID_URL"])
    return sum(n.slots for n in nodes), sum(n.busy for n in nodes)


def test_a_scrape_waits_for_a_grid_slot_instead_of_failing(env: dict[str, str]) -> None:
    deadline = time.monotonic() + 300
    while (state := _grid(env))[1] and time.monotonic() < deadline:  # the stack's own nights done
        time.sleep(2)
    slots, busy = state
    assert slots >= 2 and busy == 0, (slots, busy)
    grid = env["FACESCALE_SCRAPER__SELENIUM_GRID_URL"]
    with ThreadPoolExecutor(slots) as pool:
        held = list(pool.map(lambda _: make_driver(grid_url=grid), range(slots)))
    try:
        env = {**env, "FACESCALE_SCRAPER__TIMEOUT_S": "5"}  # per call 20 s; 3 browser starts: about 60 s
        root = f"s3://facescale/grid-queue-{int(time.time())}"
        with ThreadPoolExecutor(1) as pool:
            scraping = pool.submit(
                facescale, env, "scrape", "--identity", "Bill Gates", "--workers", "1", "--run-id", "q", root=root
            )
            time.sleep(75)  # past every browser start the scraper would try with its per-call timeout
            assert not scraping.done(), scraping.result().stderr[-2000:]
            for driver in held:
                driver.quit()
            held = []
            done = scraping.result(timeout=600)
    finally:
        for driver in held:
            driver.quit()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "did not start" not in done.stderr
    deadline = time.monotonic() + 60
    while _grid(env)[1] and time.monotonic() < deadline:  # every session ended: none left holding a slot
        time.sleep(1)
    assert _grid(env)[1] == 0
