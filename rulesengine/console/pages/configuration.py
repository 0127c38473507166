"""The Configuration page (what is running, secrets masked) and the audit log."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from .. import actions
from ..params import MAX_LIMIT, optional_whole


def register(console) -> None:
    config, journal = console.config, console.journal

    @console.both("/configuration", "GET", "viewer")
    async def configuration(request, user, params, api):
        """The configuration file the console read at its start, secrets masked (passwords, hashes,
        keys, tokens)."""
        text = actions.masked_configuration(console.configuration_text)
        if api:
            return JSONResponse({"path": config.path, "read_at": console.configuration_read_at, "yaml": text})
        return console.page(request, "configuration.html", user, path=config.path,
                            read_at=console.configuration_read_at, text=text)

    @console.both("/audit", "GET", "admin", parameters=(
            ("limit", "integer", False, f"entries, 1 to {MAX_LIMIT}; default 100"),))
    async def audit(request, user, params, api):
        """The audit log, newest first: logins and every action, with user, time, target and result.
        Parameter: limit (1 to 500)."""
        limit = optional_whole(params, "limit", 1, MAX_LIMIT, default=100)
        rows = await run_in_threadpool(journal.audit_log, limit)
        if api:
            return JSONResponse({"entries": rows})
        return console.page(request, "audit.html", user, rows=rows)
