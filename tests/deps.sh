#!/bin/sh
# Installs the Debian packages keydrift needs, if missing. Idempotent and
# quiet when everything is there.
#   tests/deps.sh        everything: the build, the tests and the benchmarks
#   tests/deps.sh demo   only what `keydrift demo` needs: the build and redis-server
set -e
BUILD="gcc make pkg-config libhiredis-dev libcurl4-openssl-dev libsqlite3-dev
libmicrohttpd-dev libjansson-dev libxxhash-dev"
RUN="redis-server redis-tools"
TEST="clang libclang-rt-14-dev clang-format sqlite3 python3-pytest python3-redis python3-yaml
prometheus prometheus-pushgateway prometheus-redis-exporter stunnel4 chromium curl wrk
openssl man-db time"
case "${1:-all}" in
demo) PKGS="$BUILD $RUN" ;;
all) PKGS="$BUILD $RUN $TEST" ;;
*)
    echo "usage: tests/deps.sh [demo]" >&2
    exit 2
    ;;
esac

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have empty package lists.
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
# Debian starts these services on install where it can; tests run their own.
for s in redis-server prometheus prometheus-pushgateway prometheus-redis-exporter; do
    $SUDO service "$s" stop >/dev/null 2>&1 || true
done
