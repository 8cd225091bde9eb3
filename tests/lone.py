"""The check both codecs' tests of ``lone`` make: it takes a read only as ``next`` would parse it."""

from __future__ import annotations

from typing import Callable

from mbserver.commands import GetMany, Request


def assert_lone_reads_as_next(
    make_parser: Callable, data: bytes, as_run: Callable | None
) -> None:
    """If ``lone`` takes ``data``, a fresh parser fed it parses the same request, and nothing more.

    ``as_run(lone)`` is the ``GetMany`` that ``next`` makes of a GET that
    ``lone`` returned as ``(key, context)``; a run of GETs ``lone`` returns
    as the ``GetMany`` itself (the tests of runs alone pass None).
    """
    lone = make_parser().lone(data)
    if lone is None:
        return
    parser = make_parser()
    parser.feed(data)
    parsed = parser.next()
    assert parser.buffered == 0 and parser.next() is None
    if isinstance(lone, (Request, GetMany)):
        assert lone == parsed
    else:
        assert parsed == as_run(lone)
