"""A project's own tests, as a user of mbserver's pytest plugin would write them.

No conftest.py: the fixtures come from the plugin alone (installed, or
``pytest -p mbserver.pytest_plugin``). tests/integration/test_pytest_plugin.py
and test_packaging.py run this file in a subprocess; the repository's own
test run does not collect it (tests/conftest.py).
"""

import django
import pytest
from django.conf import settings
from pymemcache.client.base import Client


@pytest.fixture
def client(memcached_server):
    memcached_server.flush()
    client = Client((memcached_server.host, memcached_server.port))
    yield client
    client.close()


@pytest.fixture
def cache(memcached_server):
    """Django's cache framework on the session's server, as a settings module would set it."""
    if not settings.configured:
        settings.configure(
            CACHES={
                "default": {
                    "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                    "LOCATION": memcached_server.address,
                }
            }
        )
        django.setup()
    from django.core.cache import cache

    memcached_server.flush()
    yield cache
    cache.close()


def test_fixture_describes_a_loopback_server(memcached_server):
    assert memcached_server.host == "127.0.0.1"
    assert memcached_server.address == f"127.0.0.1:{memcached_server.port}"
    assert memcached_server.stats()["pid"] == memcached_server.pid


def test_pymemcache_set_get_delete(client):
    client.set("greeting", b"hello")
    assert client.get("greeting") == b"hello"
    assert client.delete("greeting", noreply=False) is True
    assert client.get("greeting") is None


def test_flush_empties_the_server(client, memcached_server):
    client.set("doomed", b"1")
    memcached_server.flush()
    assert client.get("doomed") is None


def test_stats_count_what_clients_do(client, memcached_server):
    before = memcached_server.stats()
    client.set("counted", b"1")
    client.get("counted")
    client.get("missing")
    after = memcached_server.stats()
    assert after["cmd_set"] - before["cmd_set"] == 1
    assert after["get_hits"] - before["get_hits"] == 1
    assert after["get_misses"] - before["get_misses"] == 1


def test_django_cache_set_get_delete(cache):
    cache.set("user:1", {"name": "Ada"}, timeout=60)
    assert cache.get("user:1") == {"name": "Ada"}
    cache.delete("user:1")
    assert cache.get("user:1") is None
    assert cache.get("user:1", "absent") == "absent"


def test_django_cache_incr_touch_get_many(cache, memcached_server):
    cache.set("hits", 1)
    assert cache.incr("hits") == 2
    assert cache.incr("hits", 10) == 12
    assert cache.touch("hits", timeout=300) is True
    assert cache.touch("never-set") is False
    cache.set_many({"a": 1, "b": "two"})
    assert cache.get_many(["a", "b", "c", "hits"]) == {"a": 1, "b": "two", "hits": 12}
    assert memcached_server.stats()["touch_hits"] >= 1


def test_factory_gives_a_server_of_its_own(memcached_server_factory, memcached_server):
    small = memcached_server_factory(memory_limit=2, max_item_size="512k")
    assert small.port != memcached_server.port
    assert small.stats()["limit_maxbytes"] == 2 << 20
    assert small.stats("settings")["item_size_max"] == 512 << 10
    client = Client((small.host, small.port))
    client.set("mine", b"only here")
    assert client.get("mine") == b"only here"
    client.close()
