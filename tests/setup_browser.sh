#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the report's browser test (tests/browser/).
# Idempotent: does nothing when /usr/bin/chromium is already there.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo --preserve-env=DEBIAN_FRONTEND bash "$0" "$@"
    fi
    echo "setup_browser.sh: installing chromium needs root (apt-get install -y chromium)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
