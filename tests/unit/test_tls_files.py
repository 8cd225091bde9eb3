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


def test_a_certificate_that_is_not_pem(pair, tmp_path):
    _, key = pair
    bad = tmp_path / "cert.pem"
    bad.write_text("garbage\n")
    with pytest.raises(TLSFilesError) as raised:
        server_context(str(bad), str(key))
    assert str(raised.value).startswith(f"Error loading the certificate chain: {bad} : ")


def test_a_missing_certificate(pair, tmp_path):
    _, key = pair
    missing = tmp_path / "none.pem"
    with pytest.raises(TLSFilesError) as raised:
        server_context(str(missing), str(key))
    assert str(raised.value) == (
        f"Error loading the certificate chain: {missing} : No such file or directory"
    )


def test_a_key_that_does_not_match(pair, other_pair):
    cert, _ = pair
    _, other_key = other_pair
    with pytest.raises(TLSFilesError) as raised:
        server_context(str(cert), str(other_key))
    assert str(raised.value) == f"Error loading the key: {other_key} : key values mismatch"


def test_a_key_that_is_not_pem(pair, tmp_path):
    cert, _ = pair
    bad = tmp_path / "key.pem"
    bad.write_text("garbage\n")
    with pytest.raises(TLSFilesError) as raised:
        server_context(str(cert), str(bad))
    assert str(raised.value) == f"Error loading the key: {bad} : no usable PEM data"


def test_a_missing_key(pair, tmp_path):
    cert, _ = pair
    missing = tmp_path / "none.pem"
    with pytest.raises(TLSFilesError) as raised:
        server_context(str(cert), str(missing))
    assert str(raised.value) == f"Error loading the key: {missing} : No such file or directory"
