"""The Queues page: per destination, counts by state, its delivery window and the items (urgent
ones marked, those waiting for a closed window saying which, until when); retry dead deliveries,
pause and resume a destination, purge with a confirmation step; the pending groups of group
rules, with their instances and timers."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from ...runtime.journal import DEAD, DELIVERY_STATES, QUEUED, RETRYING, SENDING
from ...runtime.queue_operations import PURGE_STATES
from .. import actions
from ..actions import ActionError
from ..params import LARGEST_ID, MAX_LIMIT, PAGE_LIMIT, optional_whole, states, text, whole

_STATES = ", ".join(DELIVERY_STATES)
_DESTINATION = ("destination", "string", False, "a destination's name")
_ONLY_DESTINATION = ("destination", "string", False, "only this destination")


def register(console) -> None:
    config, storage, journal = console.config, console.storage, console.journal

    @console.both("/queues", "GET", "viewer", parameters=(
            _ONLY_DESTINATION,
            ("state", "string", True, f"only these states ({_STATES}); default all but delivered"),
            ("before", "integer", False, "the next page: the next_before of the page before"),
            ("limit", "integer", False, f"items per page, 1 to {MAX_LIMIT}; default {PAGE_LIMIT}")))
    async def show_queues(request, user, params, api):
        """Per destination: counts by state, whether it is paused, and its delivery window (`window`:
        name, hours, open, until: when it next closes or opens); then one page of items, newest
        first, each `urgent` or not and the closed window it waits for (`waiting_for_window`); then the pending groups of group rules (`groups`: each with its first instances and
        when it fires, `due_at`). Parameters: destination, state (repeatable; default queued, sending, retrying, dead),
        before (the next page: the `next_before` of the page before), limit (1 to 500)."""
        destination = text(params.one("destination"), "destination")
        chosen = states(params.all("state"), DELIVERY_STATES) or (QUEUED, SENDING, RETRYING, DEAD)
        before_id = optional_whole(params, "before", 1, LARGEST_ID)
        limit = optional_whole(params, "limit", 1, MAX_LIMIT, default=PAGE_LIMIT)

        def read():
            now = console.clock()
            return (actions.queues(config, journal, now), actions.queue_items(config, journal, chosen, destination,
                                                                                before_id, limit, now),
                    actions.pending_groups(journal, now))
        destinations, (items, next_before), groups = await run_in_threadpool(read)
        if api:
            return JSONResponse({"destinations": destinations, "items": items, "next_before": next_before,
                                 "groups": groups})
        return console.page(request, "queues.html", user, destinations=destinations, items=items,
                            next_before=next_before, states=chosen, all_states=DELIVERY_STATES,
                            destination=destination or "", limit=limit, groups=groups)

    @console.both("/queues/retry", "POST", "operator", parameters=(
            _ONLY_DESTINATION, ("id", "integer", True, "only these deliveries")))
    async def retry(request, user, params, api):
        """Dead deliveries queued again. Parameters: destination (else every destination), id
        (repeatable: only these deliveries)."""
        destination = text(params.one("destination"), "destination")
        ids = tuple(whole(value, "id", 1, LARGEST_ID) for value in params.all("id"))
        target = destination or (f"deliveries {', '.join(map(str, ids))}" if ids else "every destination")

        def work():
            count = actions.retry(config, journal, destination, ids)
            return f"{count} dead deliver{'y' if count == 1 else 'ies'} queued again", {"queued": count}
        return await console.acted(request, user, api, "queue retry", target, "/queues", work)

    def one_destination(params) -> str:
        destination = text(params.one("destination"), "destination")
        if not destination:
            raise ActionError("destination is needed")
        return destination

    @console.both("/queues/pause", "POST", "operator", parameters=(_DESTINATION,))
    async def pause(request, user, params, api):
        """A destination's queue waits until resumed (what is being sent finishes). Parameter: destination."""
        destination = one_destination(params)

        def work():
            actions.pause(config, journal, destination)
            return f"{destination} paused", {"destination": destination}
        return await console.acted(request, user, api, "queue pause", destination, "/queues", work)

    @console.both("/queues/resume", "POST", "operator", parameters=(_DESTINATION,))
    async def resume(request, user, params, api):
        """A destination's queue goes on now: its pause (or backoff) ends. Parameter: destination."""
        destination = one_destination(params)

        def work():
            count = actions.resume(config, journal, destination, console.clock())
            return f"{destination} resumed ({count} waiting now due)", {"destination": destination, "due": count}
        return await console.acted(request, user, api, "queue resume", destination, "/queues", work)

    def purge_request(params) -> tuple[tuple[str, ...], str | None, float | None]:
        destination = text(params.one("destination"), "destination")
        chosen = states(params.all("state"), PURGE_STATES) or ("delivered",)
        older_than = optional_whole(params, "older_than", 0, LARGEST_ID)
        actions.check_purge(config, chosen, destination)
        return chosen, destination, older_than

    purge_parameters = (
        _ONLY_DESTINATION,
        ("state", "string", True, "delivered (default), dead; queued and retrying only of a destination no "
                                  "longer configured"),
        ("older_than", "integer", False, "only deliveries not updated for this many seconds"))

    @console.both("/queues/purge", "GET", "admin", parameters=purge_parameters)
    async def purge_confirm(request, user, params, api):
        """What a purge would forget, before it is confirmed: how many deliveries are in these states
        (with older_than, the purge forgets those of them not updated for that long). Parameters:
        destination, state (repeatable: delivered (default), dead; queued and retrying only of a
        removed destination), older_than (seconds)."""
        chosen, destination, older_than = purge_request(params)
        count = await run_in_threadpool(actions.purge_preview, journal, chosen, destination)
        if api:
            return JSONResponse({"states": list(chosen), "destination": destination, "older_than": older_than,
                                 "deliveries": count})
        return console.page(request, "purge.html", user, states=chosen, destination=destination or "",
                            older_than=older_than, count=count)

    @console.both("/queues/purge", "POST", "admin", parameters=purge_parameters + (console.CONFIRM,))
    async def purge(request, user, params, api):
        """Forget finished deliveries (and their spool files) and finished instances. Parameters as
        the GET; confirm must be true."""
        chosen, destination, older_than = purge_request(params)
        if not params.flag("confirm"):
            raise ActionError("purge needs confirm=true (the GET of /queues/purge shows what it forgets)")
        target = f"{destination or 'every destination'}: {', '.join(chosen)}"

        def work():
            cutoff = console.clock() - older_than if older_than is not None else None
            result = actions.purge(config, storage, journal, chosen, destination, cutoff)
            return (f"purged {', '.join(chosen)} deliveries of {destination or 'every destination'} and "
                    f"{result['instances_forgotten']} finished instance(s)"), result
        return await console.acted(request, user, api, "queue purge", target, "/queues", work)
