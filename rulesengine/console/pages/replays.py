"""The Replays page: the replays recorded in the journal (`dicom-rules replay`), newest first,
each with who asked, the rules and the period replayed, and how far the router got (instances
waiting, processed by outcome, their deliveries by state), as `dicom-rules replays` lists them."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from .. import actions
from ..params import LARGEST_ID, MAX_LIMIT, optional_whole

REPLAYS_PER_PAGE = 20  # as `dicom-rules replays` lists by default


def register(console) -> None:
    journal = console.journal

    @console.both("/replays", "GET", "viewer", parameters=(
            ("before", "integer", False, "the next page: the next_before of the page before"),
            ("limit", "integer", False, f"replays per page, 1 to {MAX_LIMIT}; default {REPLAYS_PER_PAGE}")))
    async def show_replays(request, user, params, api):
        """The replays, newest first (`replays`: each with its instances, those missing, waiting and
        processed, outcomes and deliveries by state, and `finished`), and `next_before`.
        Parameters: before (the next page), limit (1 to 500)."""
        before_id = optional_whole(params, "before", 1, LARGEST_ID)
        limit = optional_whole(params, "limit", 1, MAX_LIMIT, default=REPLAYS_PER_PAGE)
        found, next_before = await run_in_threadpool(actions.replays, journal, before_id, limit)
        if api:
            return JSONResponse({"replays": found, "next_before": next_before})
        return console.page(request, "replays.html", user, replays=found, next_before=next_before, limit=limit)
