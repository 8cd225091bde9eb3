"""Command-line configuration: argv in, one frozen ``Settings`` out.

What lives here: the options (memcached's letters where memcached has one),
their validation, and the usage errors (exit status 2, as argparse does).
What does not: acting on the settings (``server``) or logging setup.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Sequence

from . import MEMCACHED_COMPAT_VERSION, __version__
from .hotkeys import MAX_HOT_KEYS
from .tls import TLSFilesError, server_context

MIN_ITEM_SIZE = 1024
MAX_ITEM_SIZE = 1 << 30
_SIZE = re.compile(r"([0-9]+)([kKmMgG]?)[bB]?")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True)
class Settings:
    host: str | None = "127.0.0.1"  # None: no TCP listener (only --unix-socket)
    port: int = 11211
    memory_limit: int = 64 << 20  # bytes
    max_item_size: int = 1 << 20  # bytes
    max_connections: int = 1024
    verbosity: int = 0
    idle_timeout: float = 0.0  # seconds; 0 = never close idle clients
    send_timeout: float = 30.0  # seconds a reply may wait for the client to read
    # SASL PLAIN users, (name, password); empty = no authentication. Kept out
    # of repr so that logging the settings never shows a password.
    credentials: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    shutdown_timeout: float = 10.0  # seconds a graceful stop waits for busy clients
    snapshot: str | None = None  # file for warm restarts; None = off
    snapshot_interval: float = 0.0  # seconds between periodic snapshots; 0 = only on stop
    metrics_port: int | None = None  # serve /metrics and /healthz here; None = off
    unix_socket: str | None = None  # also (or only) listen on this unix socket path
    unix_mask: int = 0o700  # permission bits of the unix socket file
    enable_shutdown: bool = False  # allow the text `shutdown` command (-A)
    prefix_delimiter: str = ":"  # -D: what ends a key's prefix in `stats detail`
    hot_keys: int = 0  # keys `stats hotkeys` reports; 0 = not tracked


def parse_address(text: str) -> tuple[str, int]:
    """`IP:PORT` or `[IPv6]:PORT` → (ip, port); ValueError says what is wrong."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\w*)|([^:\[\]]+):(\w*)", text)
    if match is None:
        raise ValueError(f"{text!r} is not IP:PORT (IPv6 as [::1]:PORT)")
    host = match.group(1) or match.group(3)
    port_text = match.group(2) if match.group(1) else match.group(4)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if match.group(1) and ":" not in host:
        raise ValueError(f"{host!r} in brackets must be an IPv6 address")
    if not _is_number(port_text) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 0 to 65535")
    return host, int(port_text)


def parse_size(text: str) -> int:
    """Bytes from `1048576`, `512k`, `1m` or `1g` (memcached's -I syntax)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 1048576, 512k or 1m")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _is_number(text: str) -> bool:
    """Plain ASCII digits (str.isdigit also accepts '²' and Arabic-Indic digits)."""
    return text.isascii() and text.isdigit()


def _port(text: str) -> int:
    if not _is_number(text) or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 0 to 65535")
    return int(text)


def _positive(text: str) -> int:
    if not _is_number(text) or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _delimiter(text: str) -> str:
    if len(text) != 1 or not text.isascii() or not text.isprintable() or text.isspace():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one printable ASCII character other than a space"
        )
    return text


def _hot_keys(text: str) -> int:
    if not _is_number(text) or int(text) > MAX_HOT_KEYS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to {MAX_HOT_KEYS}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 1e9 or seconds != seconds:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return seconds


def read_credentials(path: str) -> tuple[tuple[str, str], ...]:
    """``user:password`` lines, as memcached's -Y file; blank lines and # comments skipped."""
    users = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            user, sep, password = line.partition(":")
            if not sep or not user:
                raise ValueError(f"{path}:{number}: expected user:password")
            users.append((user, password))
    if not users:
        raise ValueError(f"{path}: no user:password lines")
    return tuple(users)


def _mask(text: str) -> int:
    """memcached's -a: permission bits in octal, such as 700 or 0770."""
    if not re.fullmatch(r"0?[0-7]{1,3}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mask such as 700 or 0770")
    return int(text, 8)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def program_name() -> str:
    """What usage messages call us: the installed `mbserver` command, or `python -m mbserver`."""
    command = os.path.basename(sys.argv[0])
    return command if command in ("mbserver", "mbserver.exe") else "python -m mbserver"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="A memcached-compatible cache server (binary and text protocols) on gevent.",
    )
    parser.add_argument(
        "address",
        metavar="IP:PORT",
        nargs="?",
        help="where to listen, e.g. 127.0.0.1:11211, 0.0.0.0:11211 or [::1]:11211 "
        "(optional with --unix-socket)",
    )
    parser.add_argument(
        "-s",
        "--unix-socket",
        metavar="PATH",
        help="also listen on this unix socket (without IP:PORT, only there); "
        "a stale socket file left by a crash is replaced",
    )
    parser.add_argument(
        "-a",
        "--unix-mask",
        metavar="MASK",
        type=_mask,
        help="permissions of the unix socket file, in octal (default 700)",
    )
    parser.add_argument(
        "-m",
        "--memory-limit",
        metavar="MiB",
        type=_positive,
        default=64,
        help="item memory in megabytes (default 64); least recently used items are evicted",
    )
    parser.add_argument(
        "-I",
        "--max-item-size",
        metavar="SIZE",
        type=_size,
        default=1 << 20,
        help="largest item, with k/m suffixes (default 1m, at least 1k, at most 1g)",
    )
    parser.add_argument(
        "-c",
        "--max-connections",
        metavar="N",
        type=_positive,
        default=1024,
        help="simultaneous client connections (default 1024)",
    )
    parser.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=0.0,
        help="close a client that sends nothing for this long (default 0: never)",
    )
    parser.add_argument(
        "--send-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=30.0,
        help="close a client that leaves a reply unread this long (default 30)",
    )
    parser.add_argument(
        "--auth-file",
        metavar="FILE",
        help="require SASL PLAIN authentication (binary protocol) for the "
        "user:password lines in FILE, as memcached's -Y; or set "
        "MBSERVER_USERNAME and MBSERVER_PASSWORD",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve TLS with this PEM certificate chain (memcached's -Z with ssl_chain_cert)",
    )
    parser.add_argument(
        "--tls-key", metavar="FILE", help="the PEM private key for --tls-cert"
    )
    parser.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=_port,
        default=None,
        help="serve Prometheus /metrics and /healthz over HTTP on this port (default off)",
    )
    parser.add_argument(
        "--snapshot",
        metavar="FILE",
        help="warm restarts: load the cache from FILE at start, write it there on a "
        "graceful stop (atomically)",
    )
    parser.add_argument(
        "--snapshot-interval",
        metavar="SECONDS",
        type=_seconds,
        default=0.0,
        help="with --snapshot, also write it every SECONDS while serving (default 0: only on stop)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=10.0,
        help="on SIGTERM/SIGINT, how long busy clients get to finish (default 10)",
    )
    parser.add_argument(
        "-A",
        "--enable-shutdown",
        action="store_true",
        help="let clients stop the server with the text command `shutdown` "
        "(a graceful stop, as SIGTERM)",
    )
    parser.add_argument(
        "-D",
        "--prefix-delimiter",
        metavar="CHAR",
        type=_delimiter,
        default=":",
        help="the character that ends a key's prefix in `stats detail` (default :)",
    )
    parser.add_argument(
        "--hot-keys",
        metavar="N",
        type=_hot_keys,
        default=0,
        help="track the N most requested keys, from a sample of the gets and sets, "
        f"for `stats hotkeys` and the metrics (default 0: off; at most {MAX_HOT_KEYS})",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: -v adds a line per connection",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"mbserver {__version__} (memcached {MEMCACHED_COMPAT_VERSION} compatible)",
    )
    return parser


ENV_PREFIX = "MBSERVER_"


def _apply_environment(parser: argparse.ArgumentParser, environ: dict[str, str]) -> None:
    """Defaults from MBSERVER_<OPTION> variables; the command line still wins."""
    for action in parser._actions:  # argparse offers no public list of its options
        if action.dest in ("help", "version"):
            continue
        name = ENV_PREFIX + action.dest.upper()
        text = environ.get(name)
        if text is None or text == "":
            continue
        if isinstance(action, argparse._StoreTrueAction):  # a switch (-A)
            if text.lower() not in _TRUE + _FALSE:
                parser.error(f"{name}={text!r} is not 1/0, true/false, yes/no or on/off")
            value = text.lower() in _TRUE
        elif action.type is None and action.nargs == 0:  # a count (-v)
            if not _is_number(text):
                parser.error(f"{name}={text!r} is not a whole number")
            value = int(text)
        else:
            try:
                value = action.type(text) if action.type else text
            except argparse.ArgumentTypeError as error:
                parser.error(f"{name}: {error}")
        action.default = value


def parse_args(
    argv: Sequence[str] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Settings from argv and MBSERVER_* variables; a bad value exits 2 with a usage message."""
    environ = os.environ if environ is None else environ
    parser = build_parser()
    _apply_environment(parser, environ)
    args = parser.parse_args(argv)
    defaults = Settings()
    host: str | None = None
    port = defaults.port
    if args.address is not None:
        try:
            host, port = parse_address(args.address)
        except ValueError as error:
            parser.error(f"bad address: {error}")
    elif args.unix_socket is None:
        parser.error("where to listen: give IP:PORT, --unix-socket PATH, or both")
    if args.unix_socket == "":
        parser.error("--unix-socket: the path is empty")
    unix_mask = defaults.unix_mask
    if args.unix_mask is not None:
        if args.unix_socket is None:
            parser.error("--unix-mask needs --unix-socket PATH")
        unix_mask = args.unix_mask
    memory = args.memory_limit << 20
    if not MIN_ITEM_SIZE <= args.max_item_size <= MAX_ITEM_SIZE:
        parser.error(f"-I must be between {MIN_ITEM_SIZE} bytes and 1g")
    if args.max_item_size > memory // 2:
        parser.error("-I cannot be more than half of -m (as in memcached)")
    credentials: tuple[tuple[str, str], ...] = ()
    if args.auth_file:
        try:
            credentials = read_credentials(args.auth_file)
        except (OSError, ValueError) as error:
            parser.error(f"--auth-file: {error}")
    user, password = environ.get("MBSERVER_USERNAME"), environ.get("MBSERVER_PASSWORD")
    if user or password:
        if not (user and password):
            parser.error("set both MBSERVER_USERNAME and MBSERVER_PASSWORD, or neither")
        credentials += ((user, password),)
    if args.snapshot_interval and not args.snapshot:
        parser.error("--snapshot-interval needs --snapshot FILE")
    if args.snapshot and not os.path.isdir(os.path.dirname(os.path.abspath(args.snapshot))):
        parser.error(f"--snapshot: no such directory for {args.snapshot}")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    for path in (args.tls_cert, args.tls_key):
        if path and not os.path.isfile(path):
            parser.error(f"no such file: {path}")
    if args.tls_cert:
        try:
            server_context(args.tls_cert, args.tls_key)
        except TLSFilesError as error:
            parser.error(f"cannot use --tls-cert/--tls-key: {error}")
    return Settings(
        host=host,
        port=port,
        memory_limit=memory,
        max_item_size=args.max_item_size,
        max_connections=args.max_connections,
        verbosity=args.verbose,
        idle_timeout=args.idle_timeout,
        send_timeout=args.send_timeout,
        credentials=credentials,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        shutdown_timeout=args.shutdown_timeout,
        snapshot=args.snapshot,
        snapshot_interval=args.snapshot_interval,
        metrics_port=args.metrics_port,
        unix_socket=args.unix_socket,
        unix_mask=unix_mask,
        enable_shutdown=args.enable_shutdown,
        prefix_delimiter=args.prefix_delimiter,
        hot_keys=args.hot_keys,
    )
