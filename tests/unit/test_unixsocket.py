"""mbserver.unixsocket: claiming a unix socket path, its mask, and cleaning up.

Unix sockets in a temporary directory, nothing on the network; no server
process (tests/integration/test_unix_socket.py starts those).
"""

from __future__ import annotations

import errno
import os
import socket
import stat

import pytest

from mbserver.unixsocket import MAX_PATH_BYTES, bind_unix, remove_unix


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "mb.sock")


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("mask", [0o700, 0o770, 0o777, 0o600])
def test_binds_with_the_mask_and_listens(path, mask):
    sock, replaced, _ = bind_unix(path, mask, 8)
    with sock, socket.socket(socket.AF_UNIX) as client:
        assert not replaced
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert mode(path) == mask
        client.connect(path)


def test_the_process_umask_is_left_as_it_was(path):
    before = os.umask(0o022)
    try:
        sock, _, _ = bind_unix(path, 0o700, 8)
        sock.close()
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)


def test_a_stale_socket_file_is_replaced(path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, as after a crash: nobody listens
    sock, replaced, identity = bind_unix(path, 0o700, 8)
    with sock:
        assert replaced
        assert identity[:2] == (os.stat(path).st_dev, os.stat(path).st_ino)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)


def test_a_live_servers_socket_is_not_stolen(path):
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen()
    with live:
        with pytest.raises(OSError) as raised:
            bind_unix(path, 0o700, 8)
        assert raised.value.errno == errno.EADDRINUSE
        assert "another server is listening" in raised.value.strerror
        live.settimeout(1)
        probe, _ = live.accept()  # the check connected to it, and only that
        probe.close()
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_a_file_that_is_not_a_socket_is_left_alone(path):
    with open(path, "w") as other:
        other.write("precious")
    with pytest.raises(OSError) as raised:
        bind_unix(path, 0o700, 8)
    assert "not a socket" in raised.value.strerror
    assert open(path).read() == "precious"


def test_a_directory_in_the_way(path):
    os.mkdir(path)
    with pytest.raises(OSError) as raised:
        bind_unix(path, 0o700, 8)
    assert "not a socket" in raised.value.strerror


def test_a_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(OSError) as raised:
        bind_unix(str(missing / "mb.sock"), 0o700, 8)
    assert raised.value.strerror == f"no such directory: {missing}"


def test_a_path_too_long_for_sun_path(tmp_path):
    name = "x" * (MAX_PATH_BYTES + 1 - len(str(tmp_path)) - 1)
    longest_plus_one = str(tmp_path / name)
    assert len(longest_plus_one) == MAX_PATH_BYTES + 1
    with pytest.raises(OSError) as raised:
        bind_unix(longest_plus_one, 0o700, 8)
    assert "at most 107" in raised.value.strerror
    # One byte shorter fits (where the temporary directory allows it).
    sock, _, _ = bind_unix(longest_plus_one[:-1], 0o700, 8)
    sock.close()


def test_remove_deletes_only_the_file_it_bound(path):
    sock, _, identity = bind_unix(path, 0o700, 8)
    sock.close()
    remove_unix(path, identity)
    assert not os.path.exists(path)
    remove_unix(path, identity)  # already gone: nothing to do
    # Another server took the path meanwhile: its file stays.
    other = socket.socket(socket.AF_UNIX)
    other.bind(path)
    with other:
        remove_unix(path, identity)
        assert os.path.exists(path)
