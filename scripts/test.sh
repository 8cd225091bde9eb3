#!/usr/bin/env bash
# Install everything the test suite needs, then run it: the README's test
# command, and exactly what CI runs (.ci/run).
#
# With no arguments, two passes: the whole suite on this Python (python3),
# then the end-to-end tests again with every server they start running on
# PyPy (MBSERVER_PYTHON, see tests/integration/support.py), the interpreter
# the README's Performance figures are measured on. Arguments go to pytest
# and make it one pass, on python3, or on $MBSERVER_PYTHON if it is set.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: the reference memcached (and the
# memcached-tool script it ships, which needs perl), libmemcached-tools
# (memccapable, memcaslap), twemproxy (nutcracker), and openssl for the TLS
# tests' throwaway certificates (PyPy: scripts/pypy-venv.sh). Under CI=true
# a test whose tool is missing fails instead of skipping.
missing=()
command -v memcached >/dev/null && [ -f /usr/share/memcached/scripts/memcached-tool ] ||
    missing+=(memcached)
command -v perl >/dev/null || missing+=(perl)
command -v memccapable >/dev/null || missing+=(libmemcached-tools)
command -v nutcracker >/dev/null || [ -x /usr/sbin/nutcracker ] || missing+=(nutcracker)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
    ./scripts/apt-install.sh "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    -r requirements-dev.txt
if [ $# -gt 0 ] || [ -n "${MBSERVER_PYTHON:-}" ]; then
    exec python3 -m pytest "$@"
fi

./scripts/pypy-venv.sh
python3 -m pytest
echo "== again, the end-to-end tests with the servers on PyPy (.venv-pypy/bin/python)"
# test_packaging installs a wheel into a CPython venv of its own, whose
# servers run on that venv's interpreter: the first pass covered it.
MBSERVER_PYTHON="$PWD/.venv-pypy/bin/python" exec python3 -m pytest tests/integration \
    --ignore tests/integration/test_packaging.py
