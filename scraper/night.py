"""The night's plan: which identities a nightly (or add-identities) run searches, how deep, in which batches.

`plan_night` is made once per run key and stored (`storage.plans`), so a rerun scrapes the
same batches. It reads the identity registry, the RAW runs, the newest dataset version's
waiting identities and the plans of other nights; it registers tonight's new names in
keyword-file order, so their labels do not depend on which scrape task runs first.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from facescale.config import Settings
from facescale.storage import StorageRoot
from facescale.storage.identities import name_key
from facescale.storage.raw import EXHAUSTED

from .keywords import parse_keywords, read_keywords

log = logging.getLogger(__name__)


class Batch(BaseModel):
    """One mapped scrape task: a RAW run id and the names it searches."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    names: list[str]
    per_keyword: int


class Plan(BaseModel):
    """A nightly run's keywords, fixed once per run key (a rerun scrapes the same batches)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    new: list[str] = Field(default_factory=list)  # names not registered before tonight
    pending: list[str] = Field(default_factory=list)  # registered, never scraped to completion
    waiting: list[str] = Field(default_factory=list)  # curated, still short of clean photos: searched deeper
    given_up: list[str] = Field(default_factory=list)  # still short, but searched max_waiting_nights already
    exhausted: list[str] = Field(default_factory=list)  # still short, but their last search had every result
    waiting_nights: dict[str, int] = Field(default_factory=dict)  # nights other plans searched them (waiting, given up)
    max_waiting_nights: int | None = None  # the cap in effect when the plan was made
    erased: int = 0  # names of the keywords file left out because their person was erased (never named here)
    batches: list[Batch] = Field(default_factory=list)


def plan_night(
    root: StorageRoot,
    settings: Settings,
    key: str,
    *,
    prefix: str = "nightly",
    new_per_night: int | None = None,
    per_keyword: int | None = None,
    batch_size: int | None = None,
    names: list[str] | None = None,
) -> Plan:
    """Plan the keywords of run ``key`` (or return the plan already made for it).

    New identities are the next ``new_per_night`` names of ``orchestration.keywords_file``
    that are not registered yet (or ``names``, when given: the add-identities DAG), registered
    here in that order so their labels do not depend on which scrape task runs first. Added to
    them: registered identities no RAW run has completed (a failed or interrupted scrape),
    and identities the newest dataset version lists as waiting for more clean photos, which
    are searched twice as deep (URLs fetched before are skipped by the scraper) unless the
    stored plans of ``orchestration.max_waiting_nights`` other nights searched them already:
    those are listed as ``given_up`` (with every waiting identity's count in ``waiting_nights``),
    so the plan shows why they are not searched; so are those whose latest search already had
    every result the engine lists (``exhausted``: fewer than asked, see `storage.raw.EXHAUSTED`).
    Adding such a person by hand searches it again.
    """
    orch = settings.orchestration
    plans, plan_name = root.plans, f"{prefix}-{key}"
    stored = plans.read(plan_name)
    if stored is not None:
        plan = Plan.model_validate_json(stored)
        log.info("plan %s exists: %d batches", plan_name, len(plan.batches))
        return plan
    per_keyword = per_keyword or settings.scraper.per_keyword
    batch_size = batch_size or orch.batch_size
    registry = root.registry
    known = {name_key(i.name): i for i in registry.list(include_removed=True)}
    skipped: list[str] = []
    if names is not None:
        wanted = parse_keywords(list(names))
        active_known = {k for k, i in known.items() if i.active}
        new = [n for n in wanted.names if name_key(n) not in active_known]
        pending_names = [known[name_key(n)].name for n in wanted.names if name_key(n) in active_known]
    else:
        limit = orch.new_per_night if new_per_night is None else new_per_night
        candidates = read_keywords(Path(orch.keywords_file)).names if orch.keywords_file else []
        erased = root.erasures.blocklist()  # a person erased is searched again only when added by hand
        skipped = [n for n in candidates if name_key(n) not in known and erased.name(n)]
        new = [n for n in candidates if name_key(n) not in known and not erased.name(n)][:limit]
        pending_names = []
    runs = root.raw.list()
    completed = {slug for record in runs for slug in record.completed}
    active = [i for i in registry.list() if i.slug not in completed]
    pending = list(dict.fromkeys(pending_names + [i.name for i in active]))
    plan = Plan(key=key, new=new, pending=pending, max_waiting_nights=orch.max_waiting_nights,
                erased=len(skipped))
    if names is None:
        newest = root.datasets.latest(published_only=False)
        waiting_slugs = sorted(newest.curation_notes().waiting) if newest is not None else []
        by_slug = {i.slug: i.name for i in registry.list()}
        short = [(s, by_slug[s]) for s in waiting_slugs if s in by_slug and by_slug[s] not in pending]
        searched = plans.waiting_nights(prefix, besides=plan_name) if short else {}
        ended = _exhausted(runs) if short else set()
        for slug, name in short:
            nights = plan.waiting_nights[name] = searched.get(name_key(name), 0)
            capped = plan.max_waiting_nights is not None and nights >= plan.max_waiting_nights
            if capped:
                plan.given_up.append(name)
            elif slug in ended:
                plan.exhausted.append(name)
            else:
                plan.waiting.append(name)
    normal = new + pending
    chunks = [(normal[s : s + batch_size], per_keyword) for s in range(0, len(normal), batch_size)]
    chunks += [(plan.waiting[s : s + batch_size], per_keyword * 2) for s in range(0, len(plan.waiting), batch_size)]
    plan.batches = [
        Batch(run_id=f"{prefix}-{key}-b{index:02d}", names=names, per_keyword=depth)
        for index, (names, depth) in enumerate(chunks)
    ]
    # Register tonight's new names now, in keyword-file order: labels must not depend on which
    # mapped scrape task happens to run first.
    registry.add(new)
    plans.write(plan_name, plan.model_dump_json(indent=2).encode())
    log.info("planned %s-%s: %d new, %d pending, %d waiting (%d given up, %d exhausted), %d batches", prefix, key,
             len(new), len(pending), len(plan.waiting), len(plan.given_up), len(plan.exhausted), len(plan.batches))
    return plan


def _exhausted(runs: list[Any]) -> set[str]:
    """Slugs whose latest search (RAW runs oldest first) ended before its depth: the engine had nothing more."""
    latest: dict[str, bool] = {}
    for record in runs:
        ended = set(record.meta.get(EXHAUSTED, []))
        for slug in record.completed:
            latest[slug] = slug in ended
    return {slug for slug, ended in latest.items() if ended}
