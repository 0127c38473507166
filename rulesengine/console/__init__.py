"""The operations console: a web application beside the router (`dicom-rules console CONFIG`).

It reads and acts on the journal and the storage folder the router uses, as the `queue` and
`quarantine` commands do, so it keeps working while the router restarts. It never imports
pynetdicom: it is not a DICOM peer.

    app.py       create_app(config): the pages, their JSON twins under /api/, the OpenAPI document
    auth.py      users and their argon2id hashes, the first-run admin, sessions, CSRF, login limits, roles
    actions.py   what the pages show and do: queues, quarantine, configuration (secrets masked), audit

A page is a handler registered in app._register (`both` adds its /api twin, with the role it
needs) and a line of app.NAVIGATION; a route open without a session goes beside /login in
app._login_routes, and tests/console/test_console_access.py lists it among the open ones.
"""
