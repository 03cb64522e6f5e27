#!/usr/bin/env bash
# Make PostGIS available to the local PostgreSQL server (Debian/Ubuntu, run as root).
# Idempotent: does nothing when PostGIS is already installed and the server is up.
set -euo pipefail

if ! command -v pg_lsclusters >/dev/null; then
    echo "install-postgis: no PostgreSQL server here (pg_lsclusters not found)" >&2
    exit 1
fi

# the major version of the installed server (one cluster, as on this kind of machine)
major="$(ls /etc/postgresql | sort -V | tail -n 1)"
if [ -z "$major" ]; then
    echo "install-postgis: no cluster under /etc/postgresql" >&2
    exit 1
fi

package="postgresql-${major}-postgis-3"
if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "$package"
fi

if ! pg_lsclusters -h "$major" main 2>/dev/null | grep -q online; then
    pg_ctlcluster --skip-systemctl-redirect "$major" main start
fi

# wait until the server accepts connections (it may have just started)
for _ in $(seq 1 30); do
    if pg_isready -q -h 127.0.0.1 -p 5432; then
        echo "install-postgis: PostgreSQL ${major} with PostGIS is ready on 127.0.0.1:5432"
        exit 0
    fi
    sleep 1
done
echo "install-postgis: PostgreSQL ${major} did not accept connections on 127.0.0.1:5432" >&2
exit 1
