"""mbserver: a memcached-compatible cache server in Python, built on gevent."""

__version__ = "0.1.0"

# What VERSION reports to clients. Clients parse the leading "major.minor.patch"
# to decide which protocol features a server has, so it names the memcached
# release whose behaviour mbserver reproduces, then says what it really is.
MEMCACHED_COMPAT_VERSION = "1.6.18"
PROTOCOL_VERSION = f"{MEMCACHED_COMPAT_VERSION}-mbserver-{__version__}"
