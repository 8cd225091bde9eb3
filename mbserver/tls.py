"""TLS contexts from the certificate and key files, and why a pair is unusable.

What lives here: ``server_context(cert, key)``, the server-side context
(TLS 1.2 or later) every TLS connection is wrapped with, built whole or not
at all, so a refresh (``refresh_certs``, SIGHUP) that fails leaves the
running context untouched; and ``TLSFilesError``, whose message names the
file at fault in memcached's words. What does not: choosing when to load
(``config`` checks the files at start, ``server`` swaps the context in).
"""

from __future__ import annotations

import ssl


class TLSFilesError(Exception):
    """The certificate or key cannot be used; the message says which, and why.

    memcached's wording (its ``refresh_certs`` reply, without the CRLF):
    ``Error loading the certificate chain: PATH : why`` or ``Error loading
    the key: PATH : why``. The reason is Python's, not OpenSSL's full error
    string: the ssl module passes on only part of it.
    """


def _why(error: Exception) -> str:
    if isinstance(error, ssl.SSLError):
        if error.reason:  # e.g. KEY_VALUES_MISMATCH → "key values mismatch"
            return error.reason.lower().replace("_", " ")
        return "no usable PEM data"  # OpenSSL said only "PEM lib"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A new server context holding ``cert`` (a PEM chain) and ``key``; TLSFilesError if unusable."""
    # The chain first, on its own, to tell a bad certificate from a bad key:
    # load_cert_chain reports both as the same "PEM lib" error.
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.load_verify_locations(cafile=cert)
    except (ssl.SSLError, OSError) as error:
        raise TLSFilesError(
            f"Error loading the certificate chain: {cert} : {_why(error)}"
        ) from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        raise TLSFilesError(f"Error loading the key: {key} : {_why(error)}") from None
    return context
