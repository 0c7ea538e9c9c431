#!/bin/sh
# Install shardd into ./.venv from this checkout.
#   deploy/install.sh          the server and its runtime dependencies, a
#                              telnet client to try it (inetutils-telnet), and,
#                              as root, the `shardd` command on every shell's
#                              PATH: a link /usr/local/bin/shardd to
#                              .venv/bin/shardd (deploy/link-command.sh;
#                              SHARDD_BIN_DIR names another directory)
#   deploy/install.sh --test   also everything the test suite needs, including
#                              the Debian packages of the real telnet and MUD
#                              clients the tests run as processes, openssl
#                              (test certificates, s_client), systemd
#                              (systemd-analyze verify of deploy/shardd.service)
#                              haproxy (the PROXY protocol and
#                              deploy/haproxy.cfg tests) and prometheus
#                              (promtool checks the --metrics exposition)
# Meant for a fresh Debian machine, as root, with only python3 on it.
set -eu
cd "$(dirname "$0")/.."

with_test=0
[ "${1:-}" = "--test" ] && with_test=1

missing=""
python3 -c 'import ensurepip, venv' 2>/dev/null || missing="python3-venv"
# the telnet client the Quick start tries the server with (--test lists it too)
dpkg-query -W -f='${Status}' inetutils-telnet 2>/dev/null | grep -q 'install ok installed' \
    || missing="$missing inetutils-telnet"
if [ "$with_test" = 1 ]; then
    for pkg in netcat-openbsd iproute2 openssl haproxy prometheus \
        tintin++ tf5 busybox putty-tools telnet-ssl systemd; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing="$missing $pkg"
    done
fi
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$with_test" = 1 ]; then
    .venv/bin/python -m pip install -q -e '.[test]'
else
    .venv/bin/python -m pip install -q -e .
fi

if [ "$(id -u)" = 0 ] || [ -n "${SHARDD_BIN_DIR:-}" ]; then
    sh deploy/link-command.sh
else
    echo "install: not root, so no link in /usr/local/bin: run .venv/bin/shardd" \
        "(or set SHARDD_BIN_DIR to a directory on your PATH)"
fi
