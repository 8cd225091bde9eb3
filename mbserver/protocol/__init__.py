"""The wire protocols: one module each, one interface, chosen by a connection's first byte.

What lives here: ``ProtocolError``; ``Protocol``, the interface every
protocol implements, and ``Answering``, the part of it they share; the loop
that writes a run of GETs (``write_run``), where protocols differ only in
how one item is framed; and the registry, ``protocol_for``, which picks a
connection's protocol from its first byte once, as memcached's
``try_read_command_negotiate`` sets one function pointer. What does not:
any one protocol's framing, commands or replies (``binary``; ``text`` with
``meta``), and sockets (``connection``).

Adding a protocol is one new module whose class implements ``Protocol``,
and one line in ``_REGISTRY``.
"""

from __future__ import annotations

import logging
from itertools import islice
from typing import TYPE_CHECKING, Callable, ClassVar, Iterable, Iterator, Protocol as Interface

if TYPE_CHECKING:
    from ..auth import Authenticator
    from ..commands import Commands, GetMany, Request, Result
    from ..config import Settings
    from .buffer import ReceiveBuffer

log = logging.getLogger("mbserver.connection")

# Replies are sent once this much is waiting, even mid-batch, so a pipeline
# or multi-get of large values never builds more than about this much per
# connection.
SEND_THRESHOLD = 1 << 20


class ProtocolError(Exception):
    """The stream cannot go on: send ``reply`` (if any), then close.

    With ``drop_replies`` the replies to the requests before it in the same
    read are dropped too: memcached's text protocol closes before it writes.
    """

    def __init__(self, message: str, reply: bytes = b"", drop_replies: bool = False):
        super().__init__(message)
        self.reply = reply
        self.drop_replies = drop_replies


class Parser(Interface):
    """A sans-IO request parser over one ``ReceiveBuffer``."""

    buffer: ReceiveBuffer
    partial: bool  # part of a request is here, the rest not yet
    empty: bool  # nothing is here, nor being collected, skipped or awaited

    def feed(self, data: bytes) -> None: ...

    def next(self) -> object | None:
        """The next complete request (a run of GETs as one ``GetMany``), or
        None until more is fed; raises ``ProtocolError`` when the stream
        cannot go on."""

    def lone(self, data: bytes) -> tuple[bytes, object] | GetMany | Request | None:
        """The request ``data`` holds if it is exactly one plain GET or SET,
        or one multi-get: ``(key, context)`` for a GET (for
        ``Protocol.get_reply``), the ``GetMany`` for a multi-get (for
        ``Protocol.answer_gets``), the ``Request`` for a SET (for
        ``Protocol.store_reply``); else None (then feed it). Asked only
        while the parser is ``empty``."""


class Protocol(Interface):
    """One connection's protocol: its parser, its answers, its authentication.

    Made once per connection by ``protocol_for(first_byte)(...)``. The
    connection feeds ``parser``, hands every request to ``answer`` (a
    ``GetMany`` to ``answer_gets``) and sends what they append to ``out``;
    it closes once ``closing`` is set and those replies are sent, or on a
    ``ProtocolError`` after sending its ``reply``.
    """

    name: ClassVar[str]  # as `stats conns` shows it
    parser: Parser
    closing: bool
    authenticated: bool
    # A run of GETs whose replies pass SEND_THRESHOLD is written a slice at
    # a time: while one is part written, ``unfinished`` is not None and
    # ``resume(out)`` writes its next slice (returning the bytes written).
    unfinished: object | None
    # The short path for a read holding one GET or SET (see connection):
    # what ``parser.lone`` does, as one function all connections share
    # (the codec's ``lone_reader``), while it may be taken (None where
    # clients must authenticate), and the functions that write the
    # replies, a GET's from its record, a SET's from its result.
    lone: Callable[[bytes], tuple[bytes, object] | Request | None] | None
    get_reply: Callable[[object, bytes | None], bytes]
    store_reply: Callable[[Request, Result], bytes]

    def __init__(
        self, commands: Commands, settings: Settings, auth: Authenticator | None, peer: str
    ) -> None: ...

    def answer(self, request: object, out: list) -> int:
        """Execute one request and append its reply (if any); its size."""

    def answer_gets(self, run: GetMany, out: list, pending: int) -> int:
        """Answer a run of GETs after ``pending`` bytes already in ``out``;
        the bytes in ``out`` afterwards. Stops at about SEND_THRESHOLD,
        leaving the rest ``unfinished``."""

    def resume(self, out: list) -> int:
        """Write the next slice of the ``unfinished`` run; its size."""


class Answering:
    """What every protocol object shares: answering a request through the
    command layer and its protocol's writer table, the closing flag, and
    writing a run of GETs' replies in slices.

    A protocol sets ``WRITERS`` (command name → ``writer(request, result,
    out)``), fills ``_own`` with the requests it answers without the
    command layer (SASL, canned replies) or around it (text ``shutdown``,
    which closes the connection), and writes ``_before_auth`` and
    ``answer_gets``.
    """

    WRITERS: ClassVar[dict[str, Callable]]
    closing = False
    unfinished = None

    def __init__(self, commands: Commands, auth, peer: str):
        self.commands = commands
        self.stats = commands.stats
        self.auth = auth
        self.authenticated = auth is None
        self.peer = peer
        self._own: dict[str, Callable[[object, list], int]] = {}

    def answer(self, request, out: list) -> int:
        if not self.authenticated:
            return self._before_auth(request, out)
        command = request.command
        own = self._own.get(command)
        if own is not None:
            return own(request, out)
        written = self.WRITERS[command](request, self.commands.execute(request), out)
        if command == "quit":
            self.closing = True
        return written

    def _before_auth(self, request, out: list) -> int:
        raise NotImplementedError

    def _write_run(self, writer, run: GetMany, records: list, out: list, pending: int) -> int:
        """Write a run's replies with ``writer`` up to about SEND_THRESHOLD;
        the rest is ``unfinished``, written by ``resume`` once that is sent,
        so a multi-get of large values is never built whole."""
        written, done = writer(run, records, out, 0, SEND_THRESHOLD - pending)
        if done < len(records):
            self.unfinished = Chunks(_run_slices(writer, run, records, done))
        return pending + written

    def resume(self, out: list) -> int:
        written, more = self.unfinished.resume(out)
        if not more:
            self.unfinished = None
        return written

    def _closing_after(self, reply: bytes, out: list, why: str) -> int:
        """Append ``reply``, and close the connection once it is sent."""
        self.closing = True
        log.info("%s: %s; closing", self.peer, why)
        out.append(reply)
        return len(reply)


# Values up to this size are copied into their reply (a copy is cheaper than
# a memoryview for small ones); larger ones are sent from their record by view.
COPY_LIMIT = 1 << 14


class Chunks:
    """A reply written a chunk at a time (``Protocol.unfinished``): the
    connection sends what it has before asking for the next chunk, so each
    chunk is made (a dump's slice of items read) only once the last is sent.
    A chunk is bytes, or a list of pieces (values sent by view among them)."""

    __slots__ = ("_chunks",)

    def __init__(self, chunks: Iterator):
        self._chunks = chunks

    def resume(self, out: list) -> tuple[int, bool]:
        """Append the next chunk; (its size, False once there are no more)."""
        chunk = next(self._chunks, None)
        if chunk is None:
            return 0, False
        if chunk.__class__ is list:
            out.extend(chunk)
            return sum(map(len, chunk)), True
        out.append(chunk)
        return len(chunk), True


def _run_slices(writer, run, records: list, done: int) -> Iterator[list]:
    """The rest of a run of GETs from entry ``done`` on, SEND_THRESHOLD at a time."""
    while done < len(records):
        out: list = []
        _, done = writer(run, records, out, done, SEND_THRESHOLD)
        yield out


def write_run(
    frame_small: Callable[[object, list], bytes],
    frame: Callable[[list, bytes, object, bytes | None], int],
    run: GetMany,
    contexts: Iterable,
    records: list,
    out: list,
    start: int = 0,
    limit: int = 1 << 62,
) -> tuple[int, int]:
    """Append the replies to a run of GETs, given each key's record or None;
    the protocol says how: ``frame(out, key, context, record)`` for one entry,
    ``frame_small(run, records)`` for a whole run of small values at once.

    The commonest run, every value small and all of it under ``limit``, is
    framed in one call: a comprehension, with no Python call per key (half
    the cost of a call per key on a run of 10 GETs). Otherwise each entry
    from ``start`` on is framed until ``limit`` bytes are written. Returns
    the bytes written and the index of the first entry not written, so the
    caller can send and go on from there.
    """
    if not start:
        sizes = list(map(len, filter(None, records)))
        if not sizes or (max(sizes) < COPY_LIMIT and sum(sizes) < limit):
            data = frame_small(run, records)
            out.append(data)
            return len(data), len(records)
    entries = zip(run.keys, contexts, records)
    if start:
        entries = islice(entries, start, None)
    written = 0
    index = start
    for key, context, rec in entries:
        index += 1
        written += frame(out, key, context, rec)
        if written >= limit:
            break
    return written, index


# -- the registry ---------------------------------------------------------------
# Imported here, below what they import from this module.

from .binary import BinaryProtocol  # noqa: E402
from .text import TextProtocol  # noqa: E402

# (first bytes, protocol); the last entry takes every other first byte.
_REGISTRY: tuple[tuple[frozenset[int], type], ...] = (
    (frozenset((BinaryProtocol.REQUEST_MAGIC,)), BinaryProtocol),
    (frozenset(range(256)), TextProtocol),
)


def protocol_for(first_byte: int) -> type:
    """The protocol a connection whose first byte is ``first_byte`` speaks."""
    for first_bytes, protocol in _REGISTRY:
        if first_byte in first_bytes:
            return protocol
    raise AssertionError("the last registry entry takes every byte")
