"""Unit tests for the LRU crawler's commands (`lru_crawler crawl|tocrawl|sleep|enable|disable`).

memcached's replies to each command are among test_text_commands'
TRANSCRIPTS; here, what a crawl does. It runs in a background greenlet: the
tests let the hub run with gevent.sleep. No sockets: requests go through
TextProtocol and the command layer (the ``client`` fixture).
"""

from __future__ import annotations

import gevent

from mbserver.crawler import SLICE


def test_settings_show_the_crawlers_settings(client):
    client.send(b"lru_crawler tocrawl 10\r\nlru_crawler sleep 250\r\nlru_crawler disable\r\n")
    settings = client.send(b"stats settings\r\n")
    for line in (b"STAT lru_crawler no\r\n", b"STAT lru_crawler_sleep 250\r\n",
                 b"STAT lru_crawler_tocrawl 10\r\n"):  # fmt: skip
        assert line in settings


def test_a_disabled_crawler_refuses_to_crawl(client):
    assert client.send(b"lru_crawler disable\r\n") == b"OK\r\n"
    assert client.send(b"lru_crawler disable\r\n") == b"OK\r\n"
    assert client.send(b"lru_crawler crawl all\r\n") == b"CLIENT_ERROR lru crawler disabled\r\n"
    assert client.send(b"lru_crawler crawl 0\r\n") == b"CLIENT_ERROR lru crawler disabled\r\n"
    assert client.send(b"lru_crawler enable\r\n") == b"OK\r\n"
    assert client.send(b"lru_crawler crawl all\r\n") == b"OK\r\n"


def test_crawl_reclaims_expired_items_in_the_background(client, clock):
    client.send(b"set a 0 5 1\r\nx\r\nset b 0 5 1\r\nx\r\nset keep 0 0 1\r\nx\r\n")
    client.send(b"set big 0 5 3000\r\n" + b"x" * 3000 + b"\r\n")
    clock.advance(6)
    assert client.send(b"lru_crawler crawl 1\r\n") == b"OK\r\n"
    assert client.send(b"lru_crawler crawl 1\r\n") == b"BUSY currently processing crawler request\r\n"
    gevent.sleep(0.05)
    assert len(client.store) == 2  # big (class 17) was not crawled
    stats = client.send(b"stats\r\n")
    assert b"STAT crawler_reclaimed 2\r\n" in stats and b"STAT lru_crawler_starts 1\r\n" in stats
    assert b"STAT items:1:crawler_items_checked 3\r\n" in client.send(b"stats items\r\n")
    assert client.send(b"lru_crawler crawl all\r\n") == b"OK\r\n"
    gevent.sleep(0.05)
    assert len(client.store) == 1


def test_tocrawl_limits_the_items_checked_per_class(client, clock):
    client.send(b"".join(b"set k%d 0 5 1 noreply\r\nx\r\n" % i for i in range(20)))
    clock.advance(6)
    client.send(b"lru_crawler tocrawl 5\r\nlru_crawler crawl all\r\n")
    gevent.sleep(0.05)
    assert len(client.store) == 15
    assert client.store.counters.crawler_items_checked[1] == 5


def test_disable_stops_a_crawl(client):
    client.send(b"".join(b"set k%d 0 0 1 noreply\r\nx\r\n" % i for i in range(5 * SLICE)))
    client.send(b"lru_crawler sleep 1000000\r\n")  # a second between slices
    client.send(b"lru_crawler crawl all\r\n")
    gevent.sleep(0.01)
    assert b"STAT lru_crawler_running 1\r\n" in client.send(b"stats\r\n")
    client.send(b"lru_crawler disable\r\n")
    gevent.sleep(0)
    assert b"STAT lru_crawler_running 0\r\n" in client.send(b"stats\r\n")
    assert client.store.counters.total("crawler_items_checked") == SLICE
