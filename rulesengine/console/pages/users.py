"""The Users page (admin): the console's users and their roles; add a user or change one's
role and password, remove one. Users are written into the configuration file, as
`dicom-rules user add|remove` writes them, and take effect in this console at once.

Nobody is locked out by it: the last admin cannot be removed or made less than admin, an admin
cannot remove themselves, and while the first-run admin is in use (the configuration names no
user) the first user written must be an admin, since from then on only configured users log in."""

from __future__ import annotations


from starlette.responses import JSONResponse

from ...config import CONSOLE_ROLES, ConfigError
from ...config.console_users import remove_user, write_user
from ..actions import ActionError
from ..auth import MIN_PASSWORD, Users, hash_password
from ..params import text

_NAME = ("name", "string", False, "the login name")


def register(console) -> None:
    config = console.config

    def listed() -> list[dict]:
        configured = bool(console.configured_users)
        return [{"name": user.name, "role": user.role, "from": "configuration" if configured else "first run"}
                for user in sorted(console.users.by_name.values(), key=lambda u: u.name)]

    def admins() -> set[str]:
        return {user.name for user in console.users.by_name.values() if user.role == "admin"}

    def adopt(users) -> None:
        """The users just written become this console's, as they would at its next start."""
        console.configured_users = tuple(users)
        console.users = Users({user.name: user for user in users})
        with open(config.path, encoding="utf-8") as fh:
            console.configuration_text = fh.read()
        console.configuration_read_at = console.clock()

    @console.both("/users", "GET", "admin")
    async def show_users(request, user, params, api):
        """The console's users, each with its role and where it is defined (the configuration, or
        the first-run admin while the configuration names none)."""
        if api:
            return JSONResponse({"users": listed(), "roles": list(CONSOLE_ROLES)})
        return console.page(request, "users.html", user, users=listed(), roles=CONSOLE_ROLES,
                            first_run=not console.configured_users, min_password=MIN_PASSWORD)

    @console.both("/users/save", "POST", "admin", parameters=(
            _NAME, ("role", "string", False, "viewer, operator or admin"),
            ("password", "string", False, f"at least {MIN_PASSWORD} characters")))
    async def save_user(request, user, params, api):
        """Add a user, or give one a new role and password. Parameters: name, role, password."""
        name = text(params.one("name"), "name")
        role = params.one("role")
        password = params.one("password")
        if not name:
            raise ActionError("name is needed")
        if role not in CONSOLE_ROLES:
            raise ActionError(f"role must be one of {', '.join(CONSOLE_ROLES)}")
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise ActionError(f"the password needs at least {MIN_PASSWORD} characters")
        if not console.configured_users and role != "admin":
            raise ActionError("the configuration names no user yet: the first one written must be an admin "
                              "(from then on the first-run admin no longer logs in)")
        if role != "admin" and admins() == {name}:
            raise ActionError(f"{name} is the last admin: make another admin first")

        def work():
            try:
                existed, users = write_user(config.path, name, role, hash_password(password))
            except ConfigError as exc:
                raise ActionError(f"the user cannot be written: {exc}") from None
            adopt(users)
            return f"{'changed' if existed else 'added'} {name} ({role})", {"name": name, "role": role}
        return await console.acted(request, user, api, "user save", name, "/users", work)

    @console.both("/users/remove", "POST", "admin", parameters=(_NAME, console.CONFIRM))
    async def remove(request, user, params, api):
        """Remove a user from the configuration. Parameters: name; confirm must be true."""
        name = text(params.one("name"), "name")
        if not name or name not in console.users.by_name:
            raise ActionError(f"no console user {name!r}", status=404)
        if not console.configured_users:
            raise ActionError("the first-run admin is not in the configuration: add users first")
        if name == user.name:
            raise ActionError("an admin cannot remove themselves: log in as another admin")
        if admins() == {name}:
            raise ActionError(f"{name} is the last admin")
        if not params.flag("confirm"):
            raise ActionError("remove needs confirm=true")

        def work():
            try:
                users = remove_user(config.path, name)
            except ConfigError as exc:
                raise ActionError(f"the user cannot be removed: {exc}") from None
            adopt(users)
            return f"removed {name}", {"name": name}
        return await console.acted(request, user, api, "user remove", name, "/users", work)


