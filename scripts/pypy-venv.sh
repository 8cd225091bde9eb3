#!/usr/bin/env bash
# Make .venv-pypy: a PyPy venv in the checkout (gitignored) holding the
# server's requirements, for `.venv-pypy/bin/python -m mbserver` (see the
# README's "Running it on PyPy"). Installs Debian's pypy3 and pypy3-venv
# with apt if they are missing. The first time, pip builds gevent for PyPy
# (about 2.5 minutes on 2 cores); after that it checks and returns.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v pypy3 >/dev/null || ! dpkg -s pypy3-venv >/dev/null 2>&1; then
    ./scripts/apt-install.sh pypy3 pypy3-venv
fi
[ -x .venv-pypy/bin/python ] || pypy3 -m venv .venv-pypy
# pip warns for each package the extra file:// indexes lack: noise, dropped.
.venv-pypy/bin/python -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    -r requirements.txt 2>&1 | { grep -v "^WARNING: Location 'file://" || true; }
