"""A text connection's protocol object and command layer without the socket: ``Client``.

Shared by the unit tests that speak the text protocol (the ``client``
fixture in conftest makes one on the fake clock). What lives here: feeding
requests to a TextProtocol and collecting its replies exactly as a
connection does, checking the Protocol contract on the way. What does not:
any test.
"""

from __future__ import annotations

from mbserver.commands import Commands, GetMany
from mbserver.config import Settings
from mbserver.protocol.text import ProtocolError, TextProtocol
from mbserver.rwlock import RWLock
from mbserver.stats import COUNTERS, Stats
from mbserver.store import Store

from .conftest import FakeAdmin


class Client:
    """One text connection's worth of parser and command layer, without the socket."""

    def __init__(self, clock, **options):
        self.clock = clock
        self.settings = Settings(**options)
        self.store = Store(self.settings.memory_limit, self.settings.max_item_size, clock=clock)
        # As on a server whose clients have used a meta command before: the
        # store then knows which items were never read (mg h), and the
        # replies compared with memcached's (test_text_commands) depend on it.
        self.store.track_fetches()
        self.lock = RWLock()
        self.stats = Stats(clock)
        self.admin = FakeAdmin(self.store)
        self.commands = Commands(self.store, self.lock, self.stats, self.settings, self.admin)
        self.protocol = TextProtocol(self.commands, self.settings, None, "test")
        self.parser = self.protocol.parser
        self.closed = False
        # Called with the replies so far each time a reply written a slice
        # at a time has one ready, where the connection sends them.
        self.on_send = None
        self.sent: list = []

    def send(self, data: bytes) -> bytes:
        """Feed data, answer every complete request, and return the replies,
        as the connection does with its protocol object."""
        assert not self.closed
        protocol = self.protocol
        out: list = []
        self.parser.feed(data)
        try:
            while (request := self.parser.next()) is not None:
                before = len(out)
                if request.__class__ is GetMany:
                    count = protocol.answer_gets(request, out, 0)
                else:
                    count = protocol.answer(request, out)
                # A long reply is written a slice at a time, as the
                # connection asks for each once it has sent the last.
                while protocol.unfinished is not None:
                    assert not self.lock.locked
                    if self.on_send is not None and out:
                        self.sent.extend(out)
                        self.on_send(out)
                        out.clear()
                        before = 0
                    count += protocol.resume(out)
                if self.on_send is None:
                    assert count == sum(len(part) for part in out[before:])
                assert not self.lock.locked
                if protocol.closing:
                    self.closed = True
                    break
        except ProtocolError:
            self.closed = True
        replies = b"".join(bytes(part) for part in self.sent + out)
        self.sent.clear()
        return replies

    def counters(self) -> dict[str, int]:
        return {name: getattr(self.stats, name) for name in COUNTERS}
