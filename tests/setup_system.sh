#!/usr/bin/env bash
# Install the Debian packages the test suite needs beyond pip: Chromium for the report's browser test
# (tests/test_report_browser.py) and a C++ compiler, with which torch.compile's inductor builds CPU
# kernels (tests/test_training_runs.py). Idempotent: does nothing when both are there.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
command -v "${CXX:-g++}" >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo --preserve-env=DEBIAN_FRONTEND,CXX bash "$0" "$@"
    fi
    echo "setup_system.sh: installing ${missing[*]} needs root (apt-get install -y ${missing[*]})" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
