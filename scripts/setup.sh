#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install img-crypt into it; with --test, the test tools too;
# with --bench, the benchmark's (tink, matplotlib). --test and --bench also install `age` from
# apt when it is missing (bench/run.py compares against it; without it, it reports SKIPPED);
# --test also installs qemu-utils and cryptsetup-bin (the LUKS1 interop tests' oracles) and
# rabbitmq-server (a private node for img-crypt-listener's tests; the system node stays off).
# Sourced by demo.sh and test.sh; safe to run again (it only installs what changed).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY=$candidate; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: need Python >= 3.11 (apt-get install python3.11)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Debian/Ubuntu ship venv separately
    echo "setup: installing the venv module with apt-get" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "python3-venv" >/dev/null
    rm -rf .venv && "$PY" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
extra=""
case "${1:-}" in
  --test) extra="[test]" ;;
  --bench) extra="[bench]" ;;
esac
.venv/bin/python -m pip install -q -e ".${extra}"

# The benchmark's peers that come from the system: age from apt when missing; gpg and openssl
# are only checked. A failure is a warning: bench/run.py then reports the tool as SKIPPED.
if [ -n "$extra" ]; then
  if ! command -v age >/dev/null 2>&1; then
    echo "setup: installing age with apt-get (for bench/run.py)" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq age >/dev/null; }; then
      echo "setup: warning: could not install age; bench/run.py will report it as SKIPPED" >&2
    fi
  fi
  # The LUKS1 interop tests (tests/test_luks_interop.py) need qemu-img and cryptsetup; they fail
  # (never skip) when these are missing, so a failed install is reported here.
  if [ "$extra" = "[test]" ] && ! { command -v qemu-img && { command -v cryptsetup || [ -x /usr/sbin/cryptsetup ]; }; } >/dev/null 2>&1; then
    echo "setup: installing qemu-utils and cryptsetup-bin with apt-get (LUKS1 interop tests)" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq qemu-utils cryptsetup-bin >/dev/null; }; then
      echo "setup: warning: could not install qemu-utils/cryptsetup-bin; the LUKS interop tests will fail" >&2
    fi
  fi
  # img-crypt-listener's end-to-end tests (tests/servers/rabbitmq.py) run a private RabbitMQ
  # node; they fail (never skip) without it. Only the package is needed: where apt would start
  # the system node, policy-rc.d stops it (the tests never use it: own node name and ports).
  if [ "$extra" = "[test]" ] && [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo "setup: installing rabbitmq-server with apt-get (img-crypt-listener tests)" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy"
    fi
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rabbitmq-server >/dev/null; }; then
      echo "setup: warning: could not install rabbitmq-server; the listener tests will fail" >&2
    fi
    [ -z "$policy" ] || $SUDO rm -f "$policy"
  fi
  for tool in gpg openssl; do
    command -v "$tool" >/dev/null 2>&1 ||
      echo "setup: warning: $tool is missing; bench/run.py will report it as SKIPPED" >&2
  done
fi
