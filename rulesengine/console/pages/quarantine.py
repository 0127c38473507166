"""The Quarantine page: what it holds and why; release to the rules, delete with a confirmation step."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from .. import actions
from ..actions import ActionError
from ..params import text

_ITEM = ("item", "string", True, "a quarantined instance as the list names it (DAY/NAME.dcm)")


def register(console) -> None:
    storage, journal = console.storage, console.journal

    @console.both("/quarantine", "GET", "viewer")
    async def show_quarantine(request, user, params, api):
        """What the quarantine holds, oldest first: item (DAY/NAME.dcm), reason, time, source."""
        items = await run_in_threadpool(actions.quarantined, storage)
        if api:
            return JSONResponse({"items": items})
        return console.page(request, "quarantine.html", user, items=items)

    def chosen(params) -> tuple[str, ...]:
        return tuple(text(item, "item") for item in params.all("item"))

    @console.both("/quarantine/release", "POST", "operator", parameters=(_ITEM,))
    async def release(request, user, params, api):
        """Quarantined instances back to the rules, as received (`dicom-rules quarantine release`).
        Parameter: item (repeatable)."""
        items = chosen(params)

        def work():
            released = actions.release(storage, journal, items)
            return (f"{len(released)} instance(s) released; the rules run on them again",
                    {"released": released})
        return await console.acted(request, user, api, "quarantine release", ", ".join(items), "/quarantine", work)

    @console.both("/quarantine/delete", "GET", "admin", parameters=(_ITEM,))
    async def delete_confirm(request, user, params, api):
        """The quarantined instances a delete would remove, before it is confirmed. Parameter: item (repeatable)."""
        items = chosen(params)
        held = {entry["item"]: entry for entry in await run_in_threadpool(actions.quarantined, storage)}
        missing = [item for item in items if item not in held]
        if not items or missing:
            raise ActionError(f"not in the quarantine: {', '.join(missing)}" if missing else
                              "name at least one quarantined item", status=404 if missing else 400)
        if api:
            return JSONResponse({"items": [held[item] for item in items]})
        return console.page(request, "delete.html", user, items=[held[item] for item in items])

    @console.both("/quarantine/delete", "POST", "admin", parameters=(_ITEM, console.CONFIRM))
    async def delete(request, user, params, api):
        """Quarantined instances deleted for good. Parameters: item (repeatable); confirm must be true."""
        items = chosen(params)
        if not params.flag("confirm"):
            raise ActionError("delete needs confirm=true (the GET of /quarantine/delete shows what it removes)")

        def work():
            deleted = actions.delete(storage, items)
            return f"{len(deleted)} quarantined instance(s) deleted", {"deleted": deleted}
        return await console.acted(request, user, api, "quarantine delete", ", ".join(items), "/quarantine", work)
