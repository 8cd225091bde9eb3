"""mbserver.testing without a process: options → argv, the environment, the log line, stats.

What does not live here: starting servers (tests/integration/test_testing.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mbserver.testing import (
    ServerError,
    format_address,
    option_arguments,
    parse_listening,
    parse_stats,
    server_environment,
)


@pytest.mark.parametrize(
    "options, argv",
    [
        ({}, []),
        ({"memory_limit": 8}, ["--memory-limit", "8"]),
        (
            {"max_item_size": "2m", "idle_timeout": 0.5},
            ["--max-item-size", "2m", "--idle-timeout", "0.5"],
        ),
        ({"verbose": True}, ["--verbose"]),
        ({"verbose": False, "snapshot": None}, []),
        ({"m": 4, "c": 10}, ["-m", "4", "-c", "10"]),
        ({"auth_file": Path("/etc/users")}, ["--auth-file", "/etc/users"]),
        # Options the server gains later pass through unchanged; the server judges them.
        ({"unix_socket": "/tmp/mb.sock"}, ["--unix-socket", "/tmp/mb.sock"]),
    ],
)
def test_options_become_long_options(options, argv):
    assert option_arguments(options) == argv


@pytest.mark.parametrize("value", [["-m", "1"], {"a": 1}, b"bytes", object()])
def test_an_option_of_another_type_is_a_clear_type_error(value):
    with pytest.raises(TypeError, match="option memory_limit="):
        option_arguments({"memory_limit": value})


def test_environment_drops_the_developers_mbserver_settings():
    base = {"PATH": "/bin", "MBSERVER_MEMORY_LIMIT": "1", "MBSERVER_USERNAME": "u", "HOME": "/"}
    assert server_environment(base) == {"PATH": "/bin", "HOME": "/"}
    assert base["MBSERVER_MEMORY_LIMIT"] == "1"  # the caller's mapping is left alone


def test_environment_carries_credentials_and_extras():
    env = server_environment({"PATH": "/bin"}, "ada", "s3cret", {"TZ": "UTC"})
    assert env == {
        "PATH": "/bin",
        "MBSERVER_USERNAME": "ada",
        "MBSERVER_PASSWORD": "s3cret",
        "TZ": "UTC",
    }


@pytest.mark.parametrize(
    "line, address",
    [
        (
            b"2026-11-30 20:30:58,857 INFO mbserver.server: listening on 127.0.0.1:38585 "
            b"(memory 64 MiB, item size 1048576 bytes, 1024 connections)\n",
            ("127.0.0.1", 38585),
        ),
        (b"INFO mbserver.server: listening on [::1]:11211 (memory 1 MiB)\n", ("::1", 11211)),
        (b"listening on 0.0.0.0:1\n", ("0.0.0.0", 1)),
        (b"INFO mbserver.server: metrics on http://127.0.0.1:9100/metrics\n", None),
        (b"usage: python -m mbserver [-h] [-m MiB]\n", None),
        (b"mbserver: cannot listen on 127.0.0.1:11211: Address already in use\n", None),
        # With a unix socket too, the address comes first; alone, there is none.
        (b"INFO mbserver.server: listening on 127.0.0.1:5 and unix:/tmp/a.sock (m)\n", ("127.0.0.1", 5)),
        (b"INFO mbserver.server: listening on unix:/tmp/a.sock (memory 64 MiB)\n", None),
    ],
)
def test_the_listening_line_gives_the_address(line, address):
    assert parse_listening(line) == address


@pytest.mark.parametrize(
    "host, port, text", [("127.0.0.1", 11211, "127.0.0.1:11211"), ("::1", 0, "[::1]:0")]
)
def test_format_address(host, port, text):
    assert format_address(host, port) == text


def test_stats_reply_becomes_a_dict_with_whole_numbers_as_ints():
    reply = (
        b"STAT pid 4242\r\nSTAT rusage_user 0.123456\r\nSTAT version 1.6.18-mbserver-0.1.0\r\n"
        b"STAT limit_maxbytes 1048576\r\nSTAT evictions on\r\nSTAT empty \r\nEND\r\n"
    )
    assert parse_stats(reply) == {
        "pid": 4242,
        "rusage_user": "0.123456",
        "version": "1.6.18-mbserver-0.1.0",
        "limit_maxbytes": 1048576,
        "evictions": "on",
        "empty": "",
    }


def test_an_empty_stats_group_is_an_empty_dict():
    assert parse_stats(b"END\r\n") == {}


@pytest.mark.parametrize("reply", [b"ERROR\r\n", b"STAT pid 1\r\nVALUE k 0 1\r\nEND\r\n"])
def test_a_reply_that_is_not_stats_is_an_error(reply):
    with pytest.raises(ServerError, match="unexpected line"):
        parse_stats(reply)
