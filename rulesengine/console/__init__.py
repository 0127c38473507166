"""The operations console: a web application beside the router (`dicom-rules console CONFIG`).

It reads and acts on the journal and the storage folder the router uses, as the `queue` and
`quarantine` commands do, so it keeps working while the router restarts. It never imports
pynetdicom: it is not a DICOM peer.

    app.py       create_app(config): sessions, roles and CSRF on every route, login, the OpenAPI document
    pages/       a module a page: its routes, each with a JSON twin under /api/
    params.py    the parameters of a request, checked
    auth.py      users and their argon2id hashes, the first-run admin, sessions, CSRF, login limits, roles
    actions.py   what the pages show and do: queues, quarantine, configuration (secrets masked)
    metrics.py   /metrics for Prometheus, read from the journal at each scrape (open, or a bearer token)
    static/      the style sheet, and live.js: a page's numbers refreshed from its /api twin

A page is a module of pages/ (`console.both` adds a route and its /api twin, with the least
role and the parameters it takes) and a line of app.NAVIGATION; a route open without a session
goes beside /login in app._login_routes, and tests/console/test_console_access.py lists it
among the open ones.
"""
