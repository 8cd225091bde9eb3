"""Locust load test for mbserver (or any memcached) over the binary protocol.

    locust -f loadtest/locustfile.py --host 127.0.0.1:11211             # web UI
    locust -f loadtest/locustfile.py --host 127.0.0.1:11211 --headless -u 50 -r 50 -t 1m
    locust -f loadtest/locustfile.py --host 127.0.0.1:11211 --headless --scenario writer-flood

What lives here: the `--host` parser, this file's command-line options, the
three user classes (`Reader`, `Writer`, `Mixed`) and the client wrapper that
times every call and reports it through locust's request event. What does
not: anything about starting servers (the integration tests and bench/ do that).

Every call is checked, because python-binary-memcached answers a network
error with None/False/0 instead of raising: a dead server would otherwise
look like a run of cache misses. The client's connection records each socket
error it swallows, so a miss is reported as `get-miss` only when the server
really answered "not found". Values name their key, so a read of any key can
be checked; a read of a key this user wrote must return exactly what it wrote.

Request names: get-hit, get-miss, set, delete, get-multi, incr (and `get` for
a read that failed before the server said hit or miss). Misses are not
failures; errors, unexpected replies and wrong values are.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import random
import re
import secrets
import sys
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from bmemcached.protocol import Protocol
from locust import User, constant, events, task
from locust.exception import StopTest
from locust.runners import WorkerRunner

logger = logging.getLogger(__name__)

REQUEST_TYPE = "memcached"
# A socket read that takes longer than this is reported as a failed request.
SOCKET_TIMEOUT = 5.0
SHARED_PREFIX = b"mbload:"
# Private keys per Mixed user: enough to exercise more than one item, few
# enough that LRU eviction of a key the user just wrote is not a real risk.
PRIVATE_SLOTS = 8
# "hot" distribution: HOT_SHARE of the accesses go to the hottest HOT_FRACTION
# of the key space (the classic 90/10 skew).
HOT_SHARE = 0.9
HOT_FRACTION = 0.1
# Share of a Writer's writes that are deletes (outside the writer flood).
DELETE_SHARE = 0.1
SCENARIOS = ("default", "writer-flood")
# Writers outnumber readers in the flood, and Mixed users' private keys would
# dilute it, so the scenario sets the weights not given explicitly.
FLOOD_WEIGHTS = {"Reader": 1, "Writer": 4, "Mixed": 0}

if not hasattr(Protocol, "_connection_error"):
    # Without this hook a dead server is indistinguishable from cache misses.
    raise ImportError(
        "bmemcached.protocol.Protocol has no _connection_error any more: update loadtest/locustfile.py"
    )


# --- host and options ---------------------------------------------------------

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def parse_host(text: str | None) -> tuple[str, int]:
    """`IP:PORT` or `[IPv6]:PORT`, optionally after `memcached://` → (host, port).

    A hostname is accepted where the IP goes; anything else raises a
    ValueError whose message says what to pass instead.
    """
    example = "--host 127.0.0.1:11211 (IP:PORT, [::1]:PORT or memcached://IP:PORT)"
    if not text or not text.strip():
        raise ValueError(f"no host to load test: pass {example}")
    rest = text.strip()
    scheme, sep, after = rest.partition("://")
    if sep:
        if scheme.lower() != "memcached":
            raise ValueError(
                f"host {text!r}: a memcached server has no {scheme}:// URL; pass {example}"
            )
        rest = after
    rest = rest.rstrip("/")
    if rest.startswith("["):
        host, bracket, port = rest[1:].partition("]")
        if not bracket or not port.startswith(":"):
            raise ValueError(f"host {text!r}: expected [IPv6]:PORT; pass {example}")
        port = port[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            message = f"host {text!r}: {host!r} is not an IPv6 address; pass {example}"
            raise ValueError(message) from None
    else:
        host, colon, port = rest.rpartition(":")
        if not colon:
            raise ValueError(f"host {text!r} has no port; pass {example}")
        if ":" in host:
            raise ValueError(f"host {text!r}: put an IPv6 address in brackets, as in [::1]:11211")
        if not _HOSTNAME.match(host):
            raise ValueError(f"host {text!r}: {host!r} is not an IP address; pass {example}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"host {text!r}: port must be a number from 1 to 65535")
    return host, int(port)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _weight(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument(
        "--key-space", type=_positive_int, default=10_000, metavar="<int>",
        env_var="LOCUST_KEY_SPACE",
        help="number of shared keys readers and writers pick from (default 10000)",
    )
    parser.add_argument(
        "--value-size", type=_positive_int, default=100, metavar="<bytes>",
        env_var="LOCUST_VALUE_SIZE",
        help="bytes per value (default 100), at least the value's ~30-byte header",
    )
    parser.add_argument(
        "--key-distribution", choices=("uniform", "hot"), default="uniform",
        env_var="LOCUST_KEY_DISTRIBUTION",
        help="uniform, or hot: 90%% of accesses go to the hottest 10%% of keys (default uniform)",
    )
    parser.add_argument(
        "--multi-get", type=_positive_int, default=10, metavar="<int>",
        env_var="LOCUST_MULTI_GET",
        help="keys per get-multi (default 10)",
    )
    # The scenario and the weights decide which users are spawned, which is
    # settled at start-up, so the web UI does not offer them (nor --flood-keys).
    parser.add_argument(
        "--scenario", choices=SCENARIOS, default="default",
        env_var="LOCUST_SCENARIO", include_in_web_ui=False,
        help="writer-flood: all users on --flood-keys keys, writers (sets only) 4 to 1 reader",
    )
    parser.add_argument(
        "--flood-keys", type=_positive_int, default=10, metavar="<int>",
        env_var="LOCUST_FLOOD_KEYS", include_in_web_ui=False,
        help="keys the writer-flood scenario hammers (default 10)",
    )
    for name in ("Reader", "Writer", "Mixed"):
        parser.add_argument(
            f"--{name.lower()}-weight", type=_weight, default=None, metavar="<int>",
            env_var=f"LOCUST_{name.upper()}_WEIGHT", include_in_web_ui=False,
            help=f"relative number of {name} users "
            f"(default {_DEFAULT_WEIGHTS[name]}, {FLOOD_WEIGHTS[name]} in writer-flood)",
        )


@dataclass(frozen=True)
class Settings:
    """The workload options, read by each user as it starts (the web UI may change them)."""

    key_space: int = 10_000
    value_size: int = 100
    key_distribution: str = "uniform"
    multi_get: int = 10
    scenario: str = "default"
    flood_keys: int = 10

    @classmethod
    def from_options(cls, options: argparse.Namespace | None) -> Settings:
        if options is None:  # locust used as a library, without its parser
            return cls()
        settings = cls(
            key_space=_as_int(options, "key_space", 1),
            value_size=_as_int(options, "value_size", 1),
            key_distribution=str(getattr(options, "key_distribution", cls.key_distribution)),
            multi_get=_as_int(options, "multi_get", 1),
            scenario=str(getattr(options, "scenario", cls.scenario)),
            flood_keys=_as_int(options, "flood_keys", 1),
        )
        if settings.key_distribution not in ("uniform", "hot"):
            wrong = settings.key_distribution
            raise ValueError(f"--key-distribution must be uniform or hot, not {wrong!r}")
        if settings.scenario not in SCENARIOS:
            raise ValueError(f"--scenario must be default or writer-flood, not {settings.scenario!r}")
        return settings


def _as_int(options: argparse.Namespace, name: str, minimum: int) -> int:
    # Values edited in the web UI arrive as strings; re-check them here.
    raw = getattr(options, name, getattr(Settings, name))
    option = "--" + name.replace("_", "-")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{option} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{option} must be at least {minimum}, not {value}")
    return value


# --- keys and values -------------------------------------------------------------

_FILLER = bytes(range(ord("a"), ord("z") + 1)) * 64


def make_value(key: bytes, stamp: bytes, size: int) -> bytes:
    """`key stamp ` and filler up to `size` bytes: a value that names its key and its write."""
    head = key + b" " + stamp + b" "
    missing = size - len(head)
    if missing <= 0:
        return head
    filler = _FILLER * (missing // len(_FILLER) + 1)
    return head + filler[:missing]


def value_belongs_to(key: bytes, value: object) -> bool:
    """Whether `value` is what some writer's make_value produced for `key`."""
    if not isinstance(value, bytes) or not value.startswith(key + b" "):
        return False
    end = value.find(b" ", len(key) + 1)
    if end < 0:
        return False
    return value == make_value(key, value[len(key) + 1 : end], len(value))


class KeyChooser:
    """Picks shared key indexes: uniformly, or 90% of picks from the hottest 10% of keys."""

    def __init__(self, size: int, distribution: str, rng: random.Random):
        self.size = size
        self.hot = max(1, int(size * HOT_FRACTION)) if distribution == "hot" else size
        self.rng = rng

    def pick(self) -> int:
        if self.hot == self.size or self.rng.random() < HOT_SHARE:
            return self.rng.randrange(self.hot)
        return self.rng.randrange(self.hot, self.size)

    def key(self) -> bytes:
        return SHARED_PREFIX + str(self.pick()).encode()

    def keys(self, count: int) -> list[bytes]:
        """Up to `count` distinct keys (fewer when the key space is smaller)."""
        count = min(count, self.size)
        chosen: dict[int, None] = {}
        while len(chosen) < count:
            chosen[self.pick()] = None
        return [SHARED_PREFIX + str(i).encode() for i in chosen]


# --- the client ----------------------------------------------------------------------


class ServerUnreachable(Exception):
    """The request never got an answer: refused, reset, timed out."""


class WrongReply(Exception):
    """The server answered, but not what this user knows the answer must be."""


class _Connection(Protocol):
    """bmemcached's single-server connection, remembering the socket error it swallows.

    Protocol turns every OSError into a "server disconnected" status that its
    get/set/delete report as None/False, exactly like a miss or a refusal.
    _connection_error is where it drops the dead socket, so recording the
    error there tells a real miss from a network failure, call by call.
    """

    def __init__(self, server: str):
        super().__init__(server, socket_timeout=SOCKET_TIMEOUT)
        # Reconnect on every call: a client-side back-off would hide how long
        # the server was really unreachable.
        self.set_retry_delay(0)
        self.error: OSError | None = None

    def _connection_error(self, exception: OSError) -> None:
        self.error = exception
        super()._connection_error(exception)


@dataclass(slots=True)
class Outcome:
    result: Any
    started: float  # time.time() when the call began, for the request event
    elapsed_ms: float
    error: Exception | None


class MemcachedUser(User):
    """One connection per user; every call timed, checked and reported."""

    abstract = True
    wait_time = constant(0)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        try:
            host, port = parse_host(self.host)
            self.settings = Settings.from_options(environment.parsed_options)
        except ValueError as e:
            # Reaches here from the web UI's form (the command line is checked
            # at init): show it among the failures, then stop the run, as
            # locust's HttpUser does for a missing host.
            environment.events.request.fire(
                request_type=REQUEST_TYPE, name="config", response_time=0, response_length=0,
                exception=e, context={}, response=None, url=None, start_time=time.time(),
            )
            raise StopTest(str(e)) from None
        self.server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.rng = random.Random()
        self.token = secrets.token_hex(4).encode()  # unique per user, across processes too
        self.sequence = 0
        if self.settings.scenario == "writer-flood":
            self.shared = KeyChooser(self.settings.flood_keys, "uniform", self.rng)
        else:
            distribution = self.settings.key_distribution
            self.shared = KeyChooser(self.settings.key_space, distribution, self.rng)
        self.conn: _Connection | None = None

    def on_start(self) -> None:
        # Protocol is thread-local (greenlet-local under locust), so make it
        # in the user's own greenlet, where the tasks will use it.
        self.conn = _Connection(self.server)

    def on_stop(self) -> None:
        if self.conn is not None:
            self.conn.disconnect()

    # -- plumbing

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Outcome:
        conn = self.conn
        conn.error = None
        started = time.time()
        t0 = time.perf_counter()
        try:
            result = method(*args, **kwargs)
            error = None
        except Exception as e:  # MemcachedException for an unexpected status, and bugs
            result, error = None, e
        elapsed_ms = (time.perf_counter() - t0) * 1000
        if error is None and conn.error is not None:
            cause = f"{type(conn.error).__name__}: {conn.error}"
            error = ServerUnreachable(f"{self.server}: {cause}")
        return Outcome(result, started, elapsed_ms, error)

    def _report(
        self, name: str, outcome: Outcome, length: int = 0, error: Exception | None = None
    ) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=outcome.elapsed_ms,
            response_length=length,
            exception=error or outcome.error,
            context={},
            response=None,
            url=None,
            start_time=outcome.started,
        )

    def _stamp(self) -> bytes:
        self.sequence += 1
        return self.token + b"." + str(self.sequence).encode()

    # -- operations; each returns whether it succeeded

    def set(self, key: bytes, value: bytes) -> bool:
        outcome = self._call(self.conn.set, key, value, 0, compress_level=0)
        error = None
        if outcome.error is None and outcome.result is not True:
            error = WrongReply(f"set answered {outcome.result!r}, not True")
        self._report("set", outcome, len(value), error)
        return outcome.error is None and error is None

    def get(self, key: bytes, expect: bytes | None = None, expect_miss: bool = False) -> None:
        """Read `key`: with `expect` it must hold exactly that, with `expect_miss` nothing."""
        outcome = self._call(self.conn.get, key)
        if outcome.error is not None:
            self._report("get", outcome)
            return
        value = outcome.result[0]
        if value is None:
            error = None if expect is None else WrongReply("a key this user just wrote is missing")
            self._report("get-miss", outcome, 0, error)
            return
        error = None
        if expect_miss:
            error = WrongReply("a key this user deleted is still there")
        elif expect is not None and value != expect:
            error = WrongReply("a key this user wrote holds a different value")
        elif not value_belongs_to(key, value):
            error = WrongReply("value is not one written for this key")
        self._report("get-hit", outcome, len(value) if isinstance(value, bytes) else 0, error)

    def get_multi(self, keys: list[bytes]) -> None:
        outcome = self._call(self.conn.get_multi, keys)
        if outcome.error is not None:
            self._report("get-multi", outcome)
            return
        found = outcome.result
        length = sum(len(v) for v, _cas in found.values() if isinstance(v, bytes))
        error = None
        if not set(found) <= set(keys):
            error = WrongReply("get-multi returned keys that were not asked for")
        elif not all(value_belongs_to(k, v) for k, (v, _cas) in found.items()):
            error = WrongReply("get-multi returned a value not written for its key")
        self._report("get-multi", outcome, length, error)

    def delete(self, key: bytes) -> bool:
        outcome = self._call(self.conn.delete, key)
        error = None
        if outcome.error is None and outcome.result is not True:
            error = WrongReply(f"delete answered {outcome.result!r}, not True")
        self._report("delete", outcome, 0, error)
        return outcome.error is None and error is None

    def incr(self, key: bytes, expect: int) -> bool:
        outcome = self._call(self.conn.incr, key, 1, 0, 0)
        error = None
        if outcome.error is None and outcome.result != expect:
            error = WrongReply("a counter only this user increments skipped or repeated a value")
        self._report("incr", outcome, 8, error)
        return outcome.error is None and error is None


# --- the users -----------------------------------------------------------------------------


class Reader(MemcachedUser):
    """Reads shared keys, one at a time and in batches; each value read must belong to its key."""

    weight = 3

    @task(4)
    def get_shared(self) -> None:
        self.get(self.shared.key())

    @task(1)
    def get_multi_shared(self) -> None:
        self.get_multi(self.shared.keys(self.settings.multi_get))


class Writer(MemcachedUser):
    """Overwrites shared keys and deletes a few (the writer flood only overwrites)."""

    weight = 1

    @task
    def write_shared(self) -> None:
        key = self.shared.key()
        if self.settings.scenario != "writer-flood" and self.rng.random() < DELETE_SHARE:
            self.delete(key)
        else:
            self.set(key, make_value(key, self._stamp(), self.settings.value_size))


class Mixed(MemcachedUser):
    """Reads shared keys; writes private ones and checks them exactly.

    set then get returns that value, delete then get misses, incr answers the
    previous answer + 1.
    """

    weight = 1

    def on_start(self) -> None:
        super().on_start()
        self.private_prefix = SHARED_PREFIX + b"u:" + self.token + b":"
        self.counters = 0
        self._new_counter()

    def _new_counter(self) -> None:
        # After a failed incr the counter's value is unknown; a new key's is
        # known without spending a request on finding out.
        self.counters += 1
        self.counter_key = self.private_prefix + b"n" + str(self.counters).encode()
        self.counter: int | None = None  # what the last incr answered

    def _private(self) -> bytes:
        return self.private_prefix + str(self.rng.randrange(PRIVATE_SLOTS)).encode()

    @task(3)
    def write_then_read(self) -> None:
        key = self._private()
        value = make_value(key, self._stamp(), self.settings.value_size)
        if self.set(key, value):
            self.get(key, expect=value)

    @task(1)
    def delete_then_read(self) -> None:
        key = self._private()
        if self.delete(key):
            self.get(key, expect_miss=True)

    @task(1)
    def increment(self) -> None:
        # A missing counter is created with the initial value 0 and incr answers 0.
        expect = 0 if self.counter is None else self.counter + 1
        if self.incr(self.counter_key, expect):
            self.counter = expect
        else:
            self._new_counter()

    @task(3)
    def get_shared(self) -> None:
        self.get(self.shared.key())

    @task(1)
    def get_multi_shared(self) -> None:
        self.get_multi(self.shared.keys(self.settings.multi_get))


_USER_CLASSES = {cls.__name__: cls for cls in (Reader, Writer, Mixed)}
_DEFAULT_WEIGHTS = {name: cls.weight for name, cls in _USER_CLASSES.items()}


# --- start-up checks -----------------------------------------------------------------------


def _fail(message: str) -> None:
    logger.error(message)
    sys.exit(1)


@events.init.add_listener
def _on_init(environment: Any, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner):
        return  # workers get the host and users from the master, which checks them
    flood = getattr(options, "scenario", "default") == "writer-flood"
    for name, cls in _USER_CLASSES.items():
        weight = getattr(options, f"{name.lower()}_weight", None)
        if weight is not None:
            cls.weight = weight
        elif flood:
            cls.weight = FLOOD_WEIGHTS[name]
    if not any(cls.weight > 0 or cls.fixed_count for cls in environment.user_classes):
        _fail("every user class has weight 0: give --reader-weight, --writer-weight or --mixed-weight")
    # Without a host the web UI can still start: its form asks for one.
    if environment.host or options.headless or options.autostart:
        try:
            parse_host(environment.host)
        except ValueError as e:
            _fail(str(e))
