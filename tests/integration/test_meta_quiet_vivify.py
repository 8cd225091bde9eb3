"""A quiet `ma` that creates its counter: answered, as memcached answers it.

Found while calibrating bench/soak.py against memcached 1.6.18 (issue 14).
Under `q`, memcached suppresses the success reply of an `ma` on an existing
counter, but when the `N` flag creates the counter it still sends it:
`VA <len> ...` and the number with `v`, `HD ...` without. A client that
counts on the reply to a vivifying `ma` (to learn the initial value, or its
CAS with `c`) would otherwise wait for it in vain.
"""

from __future__ import annotations

import pytest

from .test_text_protocol import text_exchange

pytestmark = pytest.mark.usefixtures("mbserver_only")  # it compares mbserver with memcached

EXCHANGE = (
    b"ma qv1 q N0 J7 v O1\r\n"  # created: memcached sends VA 1 O1 / 7
    b"ma qv2 q N0 J7 O2\r\n"  # created, no v: memcached sends HD O2
    b"ma qv1 q v O3\r\n"  # existing counter: both servers stay quiet
)


def test_a_quiet_ma_that_creates_its_counter_answers_as_memcached_does(start_server, memcached):
    ours = start_server()
    text_exchange(memcached.host, memcached.port, b"flush_all\r\n")
    expected = text_exchange(memcached.host, memcached.port, EXCHANGE)
    assert expected == b"VA 1 O1\r\n7\r\nHD O2\r\n"  # the reference, as recorded on this machine
    assert text_exchange(ours.host, ours.port, EXCHANGE) == expected
