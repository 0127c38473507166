"""The console's pages, a module each: `register(console)` adds its routes (a page and its JSON
twin under /api, with the least role and the parameters each takes). A new page is a module
here, a line in PAGES and a line of app.NAVIGATION."""

from __future__ import annotations

from . import configuration, messages, notifications, overview, quarantine, queues, replays, rules, users

PAGES = (overview, messages, queues, replays, notifications, quarantine, rules, configuration, users)


def register_all(console) -> None:
    for page in PAGES:
        page.register(console)
