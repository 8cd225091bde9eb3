"""Unit tests for mbserver.auth.Authenticator: SASL PLAIN messages in, a user or None out.

What lives here: which PLAIN messages (RFC 4616: ``[authzid] NUL authcid NUL
password``) authenticate whom, and that the object never shows a secret.
What does not: the wire exchange and when it is required (see
tests/integration/test_auth.py).
"""

from __future__ import annotations

import pytest

from mbserver.auth import MECHANISMS, Authenticator

USERS = [("alice", "s3cret-alice"), ("bob", "hunter2"), ("émile", "pässwörd"), ("colon", "a:b")]


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(USERS)


def test_mechanisms_are_plain_only():
    assert MECHANISMS == b"PLAIN"


@pytest.mark.parametrize("user,password", USERS)
def test_right_password_without_authzid(auth, user, password):
    message = b"\0" + user.encode() + b"\0" + password.encode()
    assert auth.plain(b"PLAIN", message) == user


@pytest.mark.parametrize("user,password", USERS)
def test_right_password_with_the_same_authzid(auth, user, password):
    u = user.encode()
    assert auth.plain(b"PLAIN", u + b"\0" + u + b"\0" + password.encode()) == user


@pytest.mark.parametrize(
    "message",
    [
        b"\0alice\0wrong",
        b"\0alice\0",
        b"\0alice\0s3cret-alice ",  # trailing space
        b"\0alice\0S3CRET-ALICE",
        b"\0alice\0s3cret-alic",  # a prefix
        b"\0alice\0hunter2",  # bob's password
        b"\0mallory\0s3cret-alice",  # unknown user
        b"\0\0s3cret-alice",  # no user
        b"\0Alice\0s3cret-alice",  # user names are case-sensitive
        b"bob\0alice\0s3cret-alice",  # acting as someone else
        b"alice\0bob\0hunter2",
        b"x\0alice\0s3cret-alice",
    ],
)
def test_wrong_credentials_are_refused(auth, message):
    assert auth.plain(b"PLAIN", message) is None


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"alice",
        b"alice\0s3cret-alice",  # only two fields
        b"\0alice\0s3cret-alice\0",  # four fields
        b"\0alice\0s3cret\0-alice",
        b"\0\0",
        b"\0" * 10,
        b"\xff\xfe\0\xff\0\xff",  # not UTF-8
    ],
)
def test_malformed_messages_are_refused(auth, message):
    assert auth.plain(b"PLAIN", message) is None


@pytest.mark.parametrize(
    "mechanism", [b"", b"plain", b"PLAIN ", b"CRAM-MD5", b"SCRAM-SHA-256", b"LOGIN", b"PLAIN\0"]
)
def test_other_mechanisms_are_refused(auth, mechanism):
    assert auth.plain(mechanism, b"\0alice\0s3cret-alice") is None


def test_an_empty_password_works_only_when_it_is_the_password():
    auth = Authenticator([("nopass", "")])
    assert auth.plain(b"PLAIN", b"\0nopass\0") == "nopass"
    assert auth.plain(b"PLAIN", b"\0nopass\0x") is None


def test_no_users_is_an_error():
    with pytest.raises(ValueError):
        Authenticator([])


def test_no_secret_in_repr_str_or_attributes(auth):
    shown = repr(auth) + str(auth)
    for user, password in USERS:
        assert password not in shown
        assert user not in shown
    # Not even in the object's own state: only digests are kept.
    state = repr(vars(auth))
    for _, password in USERS:
        assert password.encode() not in state.encode() and password not in state
