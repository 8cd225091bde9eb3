"""mbserver.tls: a server context from certificate and key files, or why not.

Files only, no sockets: the messages are memcached's refresh_certs wording
(checked against memcached 1.6.18 in tests/integration/test_admin.py).
"""

from __future__ import annotations

import ssl

import pytest

from mbserver.tls import TLSFilesError, server_context

from ..certs import make_cert


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("a"))


@pytest.fixture(scope="module")
def other_pair(tmp_path_factory):
    return make_cert(tmp_path_factory.mktemp("b"))


def test_a_good_pair(pair):
    cert, key = pair
    context = server_context(str(cert), str(key))
    assert isinstance(context, ssl.SSLContext)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    "which, content, why",
    [
        ("certificate chain", "garbage\n", "no certificate or crl found"),
        ("certificate chain", None, "No such file or directory"),
        ("key", "garbage\n", "no usable PEM data"),
        ("key", None, "No such file or directory"),
    ],
)
def test_a_file_that_does_not_load(pair, tmp_path, which, content, why):
    """Not PEM, or missing: the message names the file, in memcached's words."""
    cert, key = pair
    bad = tmp_path / "bad.pem"
    if content is not None:
        bad.write_text(content)
    if which == "key":
        key = bad
    else:
        cert = bad
    with pytest.raises(TLSFilesError) as raised:
        server_context(str(cert), str(key))
    assert str(raised.value) == f"Error loading the {which}: {bad} : {why}"


def test_a_key_that_does_not_match(pair, other_pair):
    cert, _ = pair
    _, other_key = other_pair
    with pytest.raises(TLSFilesError) as raised:
        server_context(str(cert), str(other_key))
    assert str(raised.value) == f"Error loading the key: {other_key} : key values mismatch"
