"""The unix socket's file: claiming its path, the permission mask, cleaning up.

What lives here: ``bind_unix(path, mask)``, which checks the path (its
length, its directory, what is already there), replaces a stale socket file
that a server which did not stop cleanly left behind, refuses a path where a
live server still answers, and binds with the mask applied, as memcached's
``-s``/``-a`` do; and ``remove_unix``, which deletes the file on a clean stop
if it is still the one bound. What does not: accepting connections on it
(``server``).

Errors are ``OSError`` with the reason in ``strerror``: the caller prints
``mbserver: cannot listen on unix:PATH: <reason>`` and exits 1.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

# Linux's sun_path holds 108 bytes, the terminating NUL included.
MAX_PATH_BYTES = 107
# How long a live server gets to accept the probe connection.
PROBE_TIMEOUT = 2.0


def _someone_listens(path: str) -> bool:
    """Whether a server accepts connections on the socket file at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False  # a socket file nobody listens on, or gone meanwhile
        except socket.timeout:
            return True  # alive, but its backlog is full
        return True


Identity = tuple[int, int, int]


def _identity(found: os.stat_result) -> Identity:
    # The inode alone could be reused by a file made after ours was deleted.
    return found.st_dev, found.st_ino, found.st_mtime_ns


def bind_unix(path: str, mask: int, backlog: int) -> tuple[socket.socket, bool, Identity]:
    """A listening unix socket at ``path`` whose file has the permissions ``mask``.

    Returns the socket, whether a stale socket file was replaced, and the
    file's identity for ``remove_unix``.
    """
    size = len(os.fsencode(path))
    if size > MAX_PATH_BYTES:
        raise OSError(
            errno.ENAMETOOLONG,
            f"the path is {size} bytes; a unix socket path has at most {MAX_PATH_BYTES}",
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OSError(errno.ENOENT, f"no such directory: {directory}")
    replaced = False
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        found = None
    if found is not None:
        if not stat.S_ISSOCK(found.st_mode):
            raise OSError(errno.EEXIST, "a file that is not a socket is in the way")
        if _someone_listens(path):
            raise OSError(errno.EADDRINUSE, "another server is listening on it")
        os.unlink(path)
        replaced = True
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The file is created by bind with the process umask: narrow it just for
    # that, as memcached does, so the file never exists with wider rights.
    previous = os.umask(0o777 & ~mask)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(previous)
    sock.listen(backlog)
    return sock, replaced, _identity(os.lstat(path))


def remove_unix(path: str, identity: Identity) -> None:
    """Delete the socket file, unless it is gone or another server has since taken the path."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if _identity(found) == identity:
        os.unlink(path)
