#!/usr/bin/env bash
# Install everything the test suite needs, then run it: the README's test
# command, and exactly what CI runs (.ci/run). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the integration tests drive: the reference memcached (and
# the memcached-tool script it ships, which needs perl), libmemcached-tools
# (memccapable, memcaslap), twemproxy (nutcracker), and openssl for the TLS
# tests' throwaway certificates. Under CI=true a test whose tool is missing
# fails instead of skipping.
missing=()
command -v memcached >/dev/null && [ -f /usr/share/memcached/scripts/memcached-tool ] ||
    missing+=(memcached)
command -v perl >/dev/null || missing+=(perl)
command -v memccapable >/dev/null || missing+=(libmemcached-tools)
command -v nutcracker >/dev/null || [ -x /usr/sbin/nutcracker ] || missing+=(nutcracker)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    -r requirements-dev.txt
exec python3 -m pytest "$@"
