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
        self.commands = Commands(self.store, self.lock, self.stats, self.settings)
        self.sent: list = []
        self.protocol = TextProtocol(self.commands, self.settings, None, "test", self._send)
        self.parser = self.protocol.parser
        self.closed = False

    def _send(self, out: list) -> None:
        self.sent.extend(out)
        out.clear()

    def send(self, data: bytes) -> bytes:
        """Feed data, answer every complete request, and return the replies,
        as the connection does with its protocol object."""
        assert not self.closed
        protocol = self.protocol
        out: list = []
        self.parser.feed(data)
        try:
            while (request := self.parser.next()) is not None:
                before, sent_before = len(out), len(self.sent)
                if request.__class__ is GetMany:
                    count = protocol.answer_gets(request, out, 0)
                else:
                    count = protocol.answer(request, out)
                # What the reply added and has not sent yet (a long reply is
                # sent as it goes: then only its tail is left in out).
                unsent = out if len(self.sent) > sent_before else out[before:]
                assert count == sum(len(part) for part in unsent)
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
