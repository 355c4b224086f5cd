#!/usr/bin/env bash
# The system packages some tests need, installed when missing (Debian or Ubuntu, apt-get).
# `make test` runs this first, so a fresh machine needs no manual step:
# - redis-server: Debian's build has TLS (the PyPI one does not), for
#   tests/integration/runtime/test_redis_security.py
# - chromium: the dashboard's browser test (tests/integration/ops/test_dashboard_browser.py)
# - prometheus: its promtool checks and unit-tests deploy/prometheus/ (tests/unit/deploy/test_deploy.py)
set -euo pipefail

need=()
[ -x /usr/bin/redis-server ] || need+=(redis-server)
[ -x /usr/bin/chromium ] || need+=(chromium fonts-liberation)  # fonts: only a recommends of chromium
command -v promtool >/dev/null || need+=(prometheus)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "error: the tests need ${need[*]} and this machine has no apt-get; install them with its package manager" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "error: the tests need ${need[*]}; run: sudo apt-get install --no-install-recommends ${need[*]}" >&2
  exit 1
fi
echo "installing system packages the tests need: ${need[*]}"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
