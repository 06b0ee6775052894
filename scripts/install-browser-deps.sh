#!/usr/bin/env bash
# Installs what the dashboard's browser tests need when it is missing: Debian's Chromium (the tests launch it by
# its path; Playwright's own browser download is never used) and Playwright for Python in the project's
# virtualenv. Usage: scripts/install-browser-deps.sh [PYTHON] (default .venv/bin/python).
set -euo pipefail
python="${1:-.venv/bin/python}"

if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "Chromium is missing (run as root or apt-get install chromium); the browser tests will skip" >&2
  else
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
      echo "could not install chromium; the browser tests will skip" >&2
  fi
fi

if ! "$python" -c "import playwright.sync_api" >/dev/null 2>&1; then
  "$python" -m pip install --quiet "playwright>=1.40" || \
    echo "could not install playwright; the browser tests will skip" >&2
fi
