#!/usr/bin/env bash
# System packages the test suite needs beyond .venv: Debian's chromium, for the web viewer test
# (test/test_viewer.py loads the viser page in a real headless browser). Idempotent and quick when
# already installed; without root it only says what is missing (those tests then skip, saying why).
set -euo pipefail

say() { printf '[test-deps] %s\n' "$*"; }

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing chromium (headless browser for the web viewer test)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
  command -v chromium >/dev/null 2>&1 || { say "ERROR: chromium did not install"; exit 1; }
else
  say "chromium is missing and this is not a root shell with apt-get: the browser test of the viewer"
  say "will be skipped. Install it with: sudo apt-get install chromium"
fi
