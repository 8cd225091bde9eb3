#!/usr/bin/env bash
# Install Debian packages with apt: `scripts/apt-install.sh PKG...`, through
# sudo unless already root. Used by test.sh and pypy-venv.sh for what they
# find missing.
set -euo pipefail
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
