"""The Notifications page: the journal's outbox (`dicom-rules notifications`): how many are
queued, retrying, sent and dead, then the latest of the states chosen, each with its notifier,
event, attempts, why it failed, and the values of its event. Patient data only of a notifier
with `patient_data: true`, masked for a viewer (actions.notifications)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from ...runtime.journal import NotificationState
from .. import actions, masking
from ..params import MAX_LIMIT, PAGE_LIMIT, optional_whole, states

NOTIFICATION_STATES = tuple(state.value for state in NotificationState)


def register(console) -> None:
    config, journal = console.config, console.journal

    @console.both("/notifications", "GET", "viewer", parameters=(
            ("state", "string", True, f"only these states ({', '.join(NOTIFICATION_STATES)}); default all"),
            ("limit", "integer", False, f"notifications listed, 1 to {MAX_LIMIT}; default {PAGE_LIMIT}")))
    async def show_notifications(request, user, params, api):
        """The outbox: `counts` by state, then the latest `notifications` in the states chosen,
        newest first, each with `last_error` (why it failed) and `details` (its event's values);
        `patient` only of a notifier with patient_data: true (masked for a viewer). Parameters:
        state (repeatable: queued, retrying, sent, dead; default all), limit (1 to 500)."""
        chosen = states(params.all("state"), NOTIFICATION_STATES) or NOTIFICATION_STATES
        limit = optional_whole(params, "limit", 1, MAX_LIMIT, default=PAGE_LIMIT)
        counts, rows = await run_in_threadpool(actions.notifications, config, journal, chosen, limit,
                                               masking.sees_patient_data(user.role))
        if api:
            return JSONResponse({"counts": counts, "notifications": rows})
        return console.page(request, "notifications.html", user, counts=counts, notifications=rows, states=chosen,
                            all_states=NOTIFICATION_STATES, limit=limit)
