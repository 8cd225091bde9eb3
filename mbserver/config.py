"""Command-line configuration: argv in, one frozen ``Settings`` out.

What lives here: the options (memcached's letters where memcached has one),
their validation, and the usage errors (exit status 2, as argparse does).
What does not: acting on the settings (``server``) or logging setup.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from dataclasses import dataclass
from typing import Sequence

from . import MEMCACHED_COMPAT_VERSION, __version__

MIN_ITEM_SIZE = 1024
MAX_ITEM_SIZE = 1 << 30
_SIZE = re.compile(r"([0-9]+)([kKmMgG]?)[bB]?")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 11211
    memory_limit: int = 64 << 20  # bytes
    max_item_size: int = 1 << 20  # bytes
    max_connections: int = 1024
    verbosity: int = 0


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


def _positive(text: str) -> int:
    if not _is_number(text) or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mbserver",
        description="A memcached-compatible cache server (binary protocol) on gevent.",
    )
    parser.add_argument(
        "address",
        metavar="IP:PORT",
        help="where to listen, e.g. 127.0.0.1:11211, 0.0.0.0:11211 or [::1]:11211",
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
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: -v connections and errors, -vv every command",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"mbserver {__version__} (memcached {MEMCACHED_COMPAT_VERSION} compatible)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Settings from argv; a bad value exits 2 with a usage message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        host, port = parse_address(args.address)
    except ValueError as error:
        parser.error(f"bad address: {error}")
    memory = args.memory_limit << 20
    if not MIN_ITEM_SIZE <= args.max_item_size <= MAX_ITEM_SIZE:
        parser.error(f"-I must be between {MIN_ITEM_SIZE} bytes and 1g")
    if args.max_item_size > memory // 2:
        parser.error("-I cannot be more than half of -m (as in memcached)")
    return Settings(
        host=host,
        port=port,
        memory_limit=memory,
        max_item_size=args.max_item_size,
        max_connections=args.max_connections,
        verbosity=args.verbose,
    )
