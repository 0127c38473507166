"""The console's web application: server-rendered pages, each with its JSON twin under /api/,
and the OpenAPI document of the API, built from the same table as the routes.

Every route but the login page, its POST, /logout and the static files asks for a session (pages
answer 303 to /login, the API 401), and a role (403 below it). Every POST carries the
session's CSRF token, as the form field `csrf_token` or the header X-CSRF-Token (403
without it). Journal and storage work runs in a thread of starlette's pool, never on the
event loop.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Awaitable, Callable
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .. import __version__
from ..config import Config, ConsoleUser
from ..runtime.storage import Storage
from . import actions
from .actions import ActionError
from .auth import LoginLimiter, Users, csrf_matches, first_run_admin, new_csrf_token, role_allows, session_secret
from .metrics import metrics_routes
from .pages import register_all
from .params import Params, text
from .uploads import UploadLimit

SESSION_COOKIE = "rulesengine_console"
MAX_BODY = 1 << 20  # forms and JSON bodies are small; an upload route has a bound of its own (uploads.py)
UPLOAD_MAX_MB = 64  # the default of `console: upload_max_mb`
# The pages in the navigation bar, with the least role that sees the link. A new page is a module
# of pages/ (its routes, each with its /api twin) and a line here.
NAVIGATION = (
    ("/overview", "Overview", "viewer"),
    ("/messages", "Messages", "viewer"),
    ("/queues", "Queues", "viewer"),
    ("/replays", "Replays", "viewer"),
    ("/notifications", "Notifications", "viewer"),
    ("/quarantine", "Quarantine", "viewer"),
    ("/rules", "Rules", "viewer"),
    ("/configuration", "Configuration", "viewer"),
    ("/audit", "Audit log", "admin"),
    ("/users", "Users", "admin"),
)


# ---- the application's state ----------------------------------------------------------------------


@dataclass
class _Endpoint:
    path: str
    method: str
    role: str  # the least role that may call it
    handler: Callable[..., Awaitable[Response]]
    api: bool
    upload: bool = False  # takes a file: the upload bound instead of MAX_BODY


class Console:
    def __init__(self, config: Config, clock, users: tuple[ConsoleUser, ...] | None = None):
        self.config = config
        self.clock = clock
        self.storage = Storage.of(config)
        self.journal = self.storage.journal()
        # The users of the configuration (the Users page writes them); without any, the first-run admin.
        self.configured_users = tuple(users if users is not None else
                                      config.console.users if config.console else ())
        if not self.configured_users:
            users = first_run_admin(self.storage.root)[0]
        else:
            users = self.configured_users
        self.users = Users({user.name: user for user in users})
        self.limiter = LoginLimiter(clock)
        console = config.console
        self.session_seconds = 60 * (console.session_minutes if console else 480)
        self.upload_bytes = (console.upload_max_mb if console else UPLOAD_MAX_MB) * (1 << 20)
        with open(config.path, encoding="utf-8") as fh:
            self.configuration_text = fh.read()
        self.configuration_read_at = clock()
        self.templates = Jinja2Templates(directory=str(resources.files(__package__).joinpath("templates")))
        self.templates.env.filters["when"] = actions.when
        self.endpoints: list[_Endpoint] = []
        # The parameters each route takes, by its page's path and method: (name, type,
        # repeatable, meaning). They make the OpenAPI document, and any other is refused.
        self.parameters: dict[tuple[str, str], tuple[tuple[str, str, bool, str], ...]] = {}

    def audit(self, user: str, action: str, target: str | None, result: str) -> None:
        self.journal.record_audit(user, action, target, result, self.clock())

    # ---- sessions --------------------------------------------------------------------------------

    def user_of(self, request: Request) -> ConsoleUser | None:
        """The session's user, while the session lasts and the user is still configured."""
        session = request.session
        name = session.get("user")
        if not name or not isinstance(session.get("expires"), (int, float)) or session["expires"] <= self.clock():
            return None
        return self.users.by_name.get(name)

    def csrf_token(self, request: Request) -> str:
        token = request.session.get("csrf")
        if not token:
            token = request.session["csrf"] = new_csrf_token()
        return token

    async def csrf_ok(self, request: Request) -> bool:
        given = request.headers.get("x-csrf-token")
        if given is None and not request.headers.get("content-type", "").startswith("application/json"):
            # A urlencoded or a multipart form; a part sent as a file is no token.
            given = (await request.form()).get("csrf_token")
        return csrf_matches(request.session.get("csrf"), given if isinstance(given, str) else None)

    # ---- responses -------------------------------------------------------------------------------

    def page(self, request: Request, name: str, user: ConsoleUser | None, status: int = 200,
             headers: dict | None = None, **context) -> Response:
        flash = request.session.pop("flash", None) if user else None

        def can(role: str) -> bool:
            return user is not None and role_allows(user.role, role)
        return self.templates.TemplateResponse(
            request, name, {"user": user, "csrf_token": self.csrf_token(request), "flash": flash,
                            "version": __version__, "navigation": NAVIGATION, "can": can, **context},
            status_code=status, headers=headers)

    def refusal(self, request: Request, user: ConsoleUser | None, api: bool, status: int, message: str,
                headers: dict | None = None) -> Response:
        if api:
            return JSONResponse({"error": message}, status_code=status, headers=headers)
        return self.page(request, "error.html", user, status=status, headers=headers, message=message,
                         status_code=status)

    def done(self, request: Request, api: bool, page: str, message: str, data: dict) -> Response:
        if api:
            return JSONResponse({"message": message, **data})
        request.session["flash"] = message
        return RedirectResponse(page, status_code=303)

    # ---- routes ----------------------------------------------------------------------------------

    CONFIRM = ("confirm", "boolean", False, "must be true")

    def route(self, path: str, method: str, role: str, handler, api: bool, upload: bool = False) -> None:
        self.endpoints.append(_Endpoint(path, method, role, handler, api, upload))

    def both(self, path: str, method: str, role: str, parameters: tuple = (), upload: bool = False):
        """Decorates the handler of a page and of its API twin under /api. `upload`: the route
        takes a file (multipart/form-data), up to `console: upload_max_mb`."""
        def add(handler):
            self.parameters[(path, method)] = parameters
            self.route(path, method, role, handler, api=False, upload=upload)
            self.route("/api" + path, method, role, handler, api=True, upload=upload)
            return handler
        return add

    def api_only(self, path: str, method: str, role: str, parameters: tuple = ()):
        def add(handler):
            self.parameters[(path.removeprefix("/api"), method)] = parameters
            self.route(path, method, role, handler, api=True)
            return handler
        return add

    async def acted(self, request, user, api, action: str, target: str | None, page: str, work) -> Response:
        """Run an action (`work` answers its message and data) in a thread; audit it, whatever its end."""
        try:
            message, data = await run_in_threadpool(work)
        except ActionError as exc:
            await run_in_threadpool(self.audit, user.name, action, target, f"refused: {exc}")
            raise
        await run_in_threadpool(self.audit, user.name, action, target, f"ok: {message}")
        return self.done(request, api, page, message, data)

    def guarded(self, endpoint: _Endpoint):
        async def run(request: Request) -> Response:
            user = self.user_of(request)
            if user is None:
                if endpoint.api:
                    return JSONResponse({"error": "not logged in: POST /login first"}, status_code=401)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            # The role first: it needs no body, and a body (an upload) of whoever may not post it is not read.
            if not role_allows(user.role, endpoint.role):
                if request.method == "POST":
                    await run_in_threadpool(self.audit, user.name, f"{request.method} {request.url.path}", None,
                                            f"denied: needs the role {endpoint.role}")
                return self.refusal(request, user, endpoint.api, 403,
                                    f"{request.url.path} needs the role {endpoint.role}; {user.name} is {user.role}")
            try:
                if request.method == "POST" and not await self.csrf_ok(request):
                    await run_in_threadpool(self.audit, user.name, f"{request.method} {request.url.path}", None,
                                            "refused: no valid CSRF token")
                    return self.refusal(request, user, endpoint.api, 403, "the request lacks this session's CSRF "
                                        "token (form field csrf_token or header X-CSRF-Token)")
                params = await Params.of(request)
                self.check_names(endpoint, params)
                return await endpoint.handler(request, user, params, endpoint.api)
            except ActionError as exc:
                return self.refusal(request, user, endpoint.api, exc.status, str(exc))
            except HTTPException as exc:  # a form that cannot be parsed (starlette says why)
                if exc.status_code != 400:
                    raise
                return self.refusal(request, user, endpoint.api, 400, f"the form cannot be read: {exc.detail}")
        run.__name__ = endpoint.handler.__name__
        run.__doc__ = endpoint.handler.__doc__
        return run

    def check_names(self, endpoint: _Endpoint, params: Params) -> None:
        """A parameter the route does not take is an error, not silently ignored (a misspelt
        `destinaton` would otherwise retry every destination)."""
        takes = [name for name, *_ in self.parameters.get((endpoint.path.removeprefix("/api"), endpoint.method), ())]
        unknown = sorted(set(params.values) - set(takes) - {"csrf_token"})
        if unknown:
            raise ActionError(f"unknown parameter {unknown[0][:40]!r}; {endpoint.path} {endpoint.method} takes "
                              + (", ".join(takes) if takes else "none"))


# ---- the handlers ---------------------------------------------------------------------------------


def _register(console: Console) -> None:
    """The routes of every page, and those of the API alone."""

    @console.both("/", "GET", "viewer")
    async def home(request, user, params, api):
        """Where the console starts: the overview."""
        if api:
            pages = {e.path for e in console.endpoints if not e.api and e.method == "GET"}
            return JSONResponse({"pages": sorted(pages)})
        return RedirectResponse("/overview", status_code=303)

    @console.api_only("/api/session", "GET", "viewer")
    async def session(request, user, params, api):
        """The session's user, role, expiry and CSRF token (send it as X-CSRF-Token with each POST)."""
        return JSONResponse({"user": user.name, "role": user.role, "expires": request.session["expires"],
                             "csrf_token": console.csrf_token(request)})

    register_all(console)

    @console.api_only("/api/openapi.json", "GET", "viewer")
    async def openapi(request, user, params, api):
        """This document."""
        return JSONResponse(openapi_document(console))


# ---- login and logout -----------------------------------------------------------------------------


def _login_routes(console: Console) -> list[Route]:
    def wants_json(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "") or \
            request.headers.get("content-type", "").startswith("application/json")

    def safe_next(value) -> str:
        # Only a path of this console: never another site (//host or a scheme).
        return value if isinstance(value, str) and value.startswith("/") and not value.startswith("//") \
            and "\\" not in value else "/overview"

    async def login_page(request: Request) -> Response:
        if wants_json(request):
            return JSONResponse({"csrf_token": console.csrf_token(request)})
        if console.user_of(request) is not None:  # logged in already: on to the page asked for
            return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
        return console.page(request, "login.html", None, next=safe_next(request.query_params.get("next")))

    async def login(request: Request) -> Response:
        api = wants_json(request)
        try:
            params = await Params.of(request)
            name = text(params.one("name"), "name") or ""
            password = params.one("password")
            if not isinstance(password, str):
                password = ""
        except ActionError as exc:
            return console.refusal(request, None, api, 400, str(exc))
        if not await console.csrf_ok(request):
            return console.refusal(request, None, api, 403, "the login form lacks its CSRF token: load /login again")
        address = request.client.host if request.client else "unknown"
        wait = console.limiter.wait(address, name)
        if wait > 0:
            await run_in_threadpool(console.audit, name or "-", "login", address, "refused: too many failed logins")
            seconds = math.ceil(wait)
            return console.refusal(request, None, api, 429, f"too many failed logins: try again in {seconds} s",
                                   headers={"Retry-After": str(seconds)})
        user = await run_in_threadpool(console.users.check, name, password)
        if user is None:
            console.limiter.failed(address, name)
            await run_in_threadpool(console.audit, name or "-", "login", address, "failed: wrong name or password")
            if api:
                return JSONResponse({"error": "wrong user name or password"}, status_code=401)
            return console.page(request, "login.html", None, status=401, error="Wrong user name or password.",
                                next=safe_next(params.one("next")))
        console.limiter.succeeded(name)
        await run_in_threadpool(console.audit, user.name, "login", address, "ok")
        request.session.clear()  # a new session at login: nothing of the one before carries over
        request.session.update({"user": user.name, "expires": console.clock() + console.session_seconds,
                                "csrf": new_csrf_token()})
        if api:
            return JSONResponse({"user": user.name, "role": user.role, "csrf_token": request.session["csrf"]})
        return RedirectResponse(safe_next(params.one("next")), status_code=303)

    async def logout(request: Request) -> Response:
        user = console.user_of(request)
        if user is not None and not await console.csrf_ok(request):
            return console.refusal(request, user, wants_json(request), 403,
                                   "the request lacks this session's CSRF token")
        if user is not None:
            await run_in_threadpool(console.audit, user.name, "logout", None, "ok")
        request.session.clear()
        if wants_json(request):
            return JSONResponse({"message": "logged out"})
        return RedirectResponse("/login", status_code=303)

    return [Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"], max_body_size=MAX_BODY),
            Route("/logout", logout, methods=["POST"], max_body_size=MAX_BODY)]


# ---- OpenAPI --------------------------------------------------------------------------------------


def _schema(kind: str, repeatable: bool) -> dict:
    return {"type": "array", "items": {"type": kind}} if repeatable else {"type": kind}


def _parameters(console: Console, endpoint: _Endpoint) -> dict:
    declared = console.parameters.get((endpoint.path.removeprefix("/api"), endpoint.method), ())
    # A part of the path in braces (/messages/{instance_id}) is a parameter of the path.
    in_path = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
               for name in re.findall(r"{(\w+)", endpoint.path)]
    if not declared:
        return {"parameters": in_path} if in_path else {}
    if endpoint.upload:
        return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": [name for name, kind, *_ in declared if kind == "file"],
            "properties": {name: {**({"type": "string", "format": "binary"} if kind == "file"
                                     else _schema(kind, repeatable)), "description": meaning}
                           for name, kind, repeatable, meaning in declared}}}}}}
    if endpoint.method == "GET":
        return {"parameters": in_path + [
            {"name": name, "in": "query", "description": meaning, "required": False,
             "schema": _schema(kind, repeatable), **({"explode": True} if repeatable else {})}
            for name, kind, repeatable, meaning in declared]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False,
        "properties": {name: {**_schema(kind, repeatable), "description": meaning}
                       for name, kind, repeatable, meaning in declared}}}}}}


def openapi_document(console: Console) -> dict:
    paths: dict[str, dict] = {}
    for endpoint in console.endpoints:
        if not endpoint.api:
            continue
        doc = " ".join((endpoint.handler.__doc__ or "").split())
        summary = doc.split(". ")[0].rstrip(".")
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = {
            **_parameters(console, endpoint),
            "summary": summary,
            "description": f"{doc} Role: {endpoint.role} or above.",
            "responses": {
                "200": {"description": "the answer, a JSON object", "content": {"application/json": {}}},
                "400": {"description": "a parameter is wrong: {\"error\": message}"},
                "401": {"description": "no session: POST /login first"},
                "403": {"description": "the role is below " + endpoint.role
                        + (", or the X-CSRF-Token header is missing" if endpoint.method == "POST" else "")},
            },
        }
    paths["/login"] = {"post": {
        "summary": "Log in: a JSON body {name, password} with the X-CSRF-Token a GET of /login "
                   "(Accept: application/json) gives; answers the session's CSRF token",
        "responses": {"200": {"description": "logged in"}, "401": {"description": "wrong name or password"},
                      "429": {"description": "too many failed logins; Retry-After says when to try again"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "rulesengine console", "version": __version__,
                 "description": "The JSON twin of every page of the console. A session cookie comes from "
                                "POST /login; every POST carries X-CSRF-Token."},
        "components": {"securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE}}},
        "security": [{"session": []}],
        "paths": paths,
    }


# ---- the application ------------------------------------------------------------------------------


class _SecurityHeaders:
    """Headers every answer carries: no framing, no foreign scripts or styles, no caching of pages."""

    HEADERS = {"x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "same-origin",
               "content-security-policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'"}

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.HEADERS.items():
                    headers[name] = value
                if not scope["path"].startswith("/static/"):
                    headers["cache-control"] = "no-store"
            await send(message)
        await self.app(scope, receive, send_with_headers)


def create_app(config: Config, *, clock=time.time, users: tuple[ConsoleUser, ...] | None = None) -> Starlette:
    """The console for a configuration. `clock` gives the time of sessions, login limits and the
    audit log (tests move it); `users` replaces those of the configuration and the first-run admin."""
    console = Console(config, clock, users)
    _register(console)
    routes = _login_routes(console) + metrics_routes(console)  # open: outside the session's guard
    # Each route bounds its body: MAX_BODY, or the upload bound while an upload is read.
    routes += [Route(e.path, console.guarded(e), methods=[e.method],
                     middleware=[Middleware(UploadLimit, limit=console.upload_bytes)] if e.upload else None,
                     max_body_size=None if e.upload else MAX_BODY) for e in console.endpoints]
    routes.append(Mount("/static", StaticFiles(directory=str(resources.files(__package__).joinpath("static"))),
                        name="static"))
    https = bool(config.console and config.console.tls)
    app = Starlette(routes=routes, middleware=[
        Middleware(_SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=session_secret(console.storage.root), session_cookie=SESSION_COOKIE,
                   max_age=console.session_seconds, same_site="strict", https_only=https),
    ])
    app.state.console = console
    return app
