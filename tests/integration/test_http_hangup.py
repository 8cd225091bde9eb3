"""The hang-up on HTTP request lines, side by side with memcached 1.6.18.

memcached closes a text connection without a byte when an unknown command's
last token starts with "HTTP/" (a browser's or a forged cross-protocol
request), except where its dispatch answers by the first letter: each line
here goes to both servers and must get the same treatment.
What does not: the parser's rule without a process (tests/unit/test_text_codec.py).
"""

from __future__ import annotations

import pytest

from .textwire import silent, until_closed

pytestmark = pytest.mark.usefixtures("mbserver_only")

HTTP_LINES = [
    b"GET / HTTP/1.0\r\n",
    b"POST /x HTTP/1.1\r\nHost: cache\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1\r\n",
    b"   GET   /   HTTP/1.0   \r\n",
    b"GET / HTTP/1.0\n",
    b"misbehave HTTP/1.0\r\n",  # a name memcached knows only in debug builds
    b"version\r\nGET / HTTP/1.0\r\nversion\r\n",
]
NOT_HTTP = [
    b"get / HTTP/1.0\r\n",
    b"status / HTTP/1.0\r\n",
    b"mx HTTP/1\r\n",
    b"GET / HTTP/1.0 noreply\r\n",
    b"GET / http/1.0\r\n",
    b"GET " + b"a " * 22 + b"HTTP/1.0\r\n",
    # Names memcached knows answer as those commands would.
    b"lru HTTP/1.0\r\n",
    b"lru_crawler HTTP/1.0\r\n",
    b"watch HTTP/1.0\r\n",
    b"extstore x HTTP/1.0\r\n",
    b"refresh_certs HTTP/1.0\r\n",
    b"cache_memlimit HTTP/1.0\r\n",
    b"verbosity HTTP/1.0\r\n",
    b"flush_all HTTP/1.0\r\n",
    b"bget HTTP/1.0\r\n",
    b"me HTTP/1.0\r\n",
]


@pytest.mark.parametrize("line", HTTP_LINES[:-1], ids=repr)
def test_an_http_request_line_gets_no_byte_and_a_close(server, memcached, line):
    for each in (server, memcached):
        assert until_closed(each, line) == (b"", "eof"), each.kind


@pytest.mark.parametrize("data", [HTTP_LINES[-1], b"version\r\n" + b"x" * 3000], ids=["http", "long line"])
def test_replies_before_the_closing_line_in_the_same_read_are_dropped(server, memcached, data):
    """As memcached, which closes before it writes: nothing at all comes back."""
    for each in (server, memcached):
        assert until_closed(each, data) == (b"", "eof"), each.kind


@pytest.mark.parametrize("line", NOT_HTTP, ids=repr)
def test_lines_memcached_answers_despite_http(server, memcached, line):
    assert silent(server, line) == silent(memcached, line)
