"""Tests interrupted as a developer interrupts them: the server must still stop.

Each writes "PID PORT" of the session's server to the file named by
SAMPLE_SERVERS_FILE before it is interrupted.
"""

import os
import time


def remember(server):
    with open(os.environ["SAMPLE_SERVERS_FILE"], "a") as out:
        out.write(f"{server.pid} {server.port}\n")


def test_raises_keyboard_interrupt(memcached_server):
    remember(memcached_server)
    raise KeyboardInterrupt


def test_waits_for_ctrl_c(memcached_server):
    remember(memcached_server)
    # The outer test sends SIGINT as soon as it reads the file; the bound only
    # keeps a broken run from hanging.
    time.sleep(60)
    raise AssertionError("no SIGINT arrived within 60 s")
