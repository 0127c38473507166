"""The console's commands: `console` serves the operations console beside the router, and
`user add` and `user remove` write console users (password hashes) into the configuration file."""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import os
import signal
import socket
import sys

from ..config import CONSOLE_ROLES, ConfigError, load_config
from ..config.console_users import remove_user, write_user
from .common import EXIT_FINDINGS, EXIT_OK, UsageError


# ---- console ------------------------------------------------------------------------------------


def _listening_socket(host: str, port: int) -> socket.socket:
    """The console's socket, bound here so that a port in use is a clear error, not uvicorn's traceback."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a host name
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    # IPPROTO_TCP named: asyncio turns Nagle's algorithm off only on connections of a socket that
    # says it is TCP, and with it on a keep-alive answer's body waits for the client's delayed ACK
    # of its headers (40 ms an answer).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, stopping on SIGINT or SIGTERM with status 0 as the router does (uvicorn
        itself raises the signal again once stopped, and the process ends killed by it)."""

        @contextlib.contextmanager
        def capture_signals(self):
            previous = {number: signal.signal(number, self.handle_exit) for number in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for number, handler in previous.items():
                    signal.signal(number, handler)
    return Server


def cmd_console(args) -> int:
    import uvicorn

    from ..console.app import create_app
    from ..console.auth import USERS_FILE, StorageFileError, first_run_admin
    from ..runtime.storage import Storage

    config = load_config(args.config, secrets=False)  # the console needs no hash key
    console = config.console
    if console is None:
        raise UsageError(f"{config.path} has no console: section; add one (`console: {{}}` for the defaults, "
                         "see docs/configuration.md)")
    if console.tls:
        for key in ("certificate", "private_key"):
            path = getattr(console.tls, key)
            if not os.access(path, os.R_OK):
                raise ConfigError(f"{config.at('console', 'tls', key)}: cannot read {path}")
    if console.metrics_token_file and not os.access(console.metrics_token_file, os.R_OK):
        raise ConfigError(f"{config.at('console', 'metrics_token_file')}: cannot read {console.metrics_token_file}")
    storage = Storage.of(config)
    try:
        if not console.users:
            _users, password = first_run_admin(storage.root)
            if password is not None:
                print(f"console: first start without users: log in as admin with the password {password}\n"
                      f"console: it is shown this once; only its hash is kept, in "
                      f"{os.path.join(storage.root, USERS_FILE)}. Add users with `dicom-rules user add "
                      f"{args.config} NAME --role admin`.", flush=True)
        app = create_app(config)  # the configured users, else the first-run admin just made
    except StorageFileError as exc:
        raise UsageError(f"console: {exc}") from None
    try:
        sock = _listening_socket(console.bind, console.port)
    except OSError as exc:
        print(f"dicom-rules: console: cannot listen on {console.bind}:{console.port}: "
              f"{exc.strerror or exc} ({config.at('console', 'port')})", file=sys.stderr)
        return EXIT_FINDINGS
    scheme = "https" if console.tls else "http"
    host = f"[{console.bind}]" if ":" in console.bind else console.bind
    print(f"console at {scheme}://{host}:{console.port}/ (storage {storage.root}); stop with Ctrl-C or SIGTERM",
          flush=True)
    server = _server_class()(uvicorn.Config(
        app, log_level="debug" if args.verbose else "warning", access_log=bool(args.verbose),
        ssl_certfile=console.tls.certificate if console.tls else None,
        ssl_keyfile=console.tls.private_key if console.tls else None, server_header=False,
        # The client address that login limits count: X-Forwarded-For only from a proxy on this machine.
        proxy_headers=True, forwarded_allow_ips="127.0.0.1,::1"))
    server.run(sockets=[sock])
    return EXIT_OK


# ---- user add -----------------------------------------------------------------------------------


def _password(from_stdin: bool) -> str:
    from ..console.auth import MIN_PASSWORD

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise UsageError("the two passwords differ; nothing written")
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password needs at least {MIN_PASSWORD} characters; nothing written")
    return password


def cmd_user_add(args) -> int:
    from ..console.auth import hash_password

    load_config(args.config, secrets=False)  # a broken file is reported before a password is asked
    password = _password(args.password_stdin)
    try:
        changed, _users = write_user(args.config, args.name, args.role, hash_password(password))
    except ConfigError as exc:
        raise UsageError(f"the user cannot be added: {exc}") from None
    print(f"{'changed' if changed else 'added'} console user {args.name} ({args.role}) in {args.config}; "
          "a running console reads it at its next start")
    return EXIT_OK


def cmd_user_remove(args) -> int:
    try:
        remove_user(args.config, args.name)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    print(f"removed console user {args.name} from {args.config}; a running console forgets it at its next start")
    return EXIT_OK


def add_console_commands(sub) -> None:
    console = sub.add_parser("console",
                             help="serve the operations console (web pages and a JSON API) beside the router")
    console.add_argument("config", help="router configuration (YAML) with a console: section")
    console.add_argument("-v", "--verbose", action="store_true", help="log every request")
    console.set_defaults(func=cmd_console)

    user = sub.add_parser("user", help="console users: add one (or change a password) in the configuration")
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION")
    user_sub.required = True
    add = user_sub.add_parser("add", help="add a user, or change one's role and password")
    add.add_argument("config", help="router configuration (YAML); the user is written into it, comments kept")
    add.add_argument("name", help="login name")
    add.add_argument("--role", required=True, choices=CONSOLE_ROLES, help="viewer, operator or admin")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input (else asked twice)")
    add.set_defaults(func=cmd_user_add)
    remove = user_sub.add_parser("remove", help="remove a user from the configuration")
    remove.add_argument("config", help="router configuration (YAML)")
    remove.add_argument("name", help="login name")
    remove.set_defaults(func=cmd_user_remove)
