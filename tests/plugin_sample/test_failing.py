"""Tests that fail on purpose: their reports must carry the servers' logs.

Each writes "PID PORT" of the server it used to the file named by
SAMPLE_SERVERS_FILE, so the outer test can check they are gone afterwards.
"""

import os


def remember(server):
    with open(os.environ["SAMPLE_SERVERS_FILE"], "a") as out:
        out.write(f"{server.pid} {server.port}\n")


def test_fails_using_the_session_server(memcached_server):
    remember(memcached_server)
    assert memcached_server.stats()["curr_items"] == "deliberately wrong"


def test_fails_using_a_server_of_its_own(memcached_server_factory):
    server = memcached_server_factory(memory_limit=3)
    remember(server)
    assert server.stats()["limit_maxbytes"] == "deliberately wrong"
