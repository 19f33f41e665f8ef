#!/usr/bin/env bash
# Install what `make test` / `make demo` / `make bench` need on Debian, only
# when something is missing: a machine that already has everything never
# touches apt.  Usable on its own (.ci/run calls it when `make` itself is missing).
#
#   deps.sh [MAJOR]   PostgreSQL MAJOR (default 15, Debian 12's); rootfs.sh
#                     runs it inside the root filesystem it builds for 17 and 18
set -euo pipefail

PG_MAJOR=${1:-15}

# postgresql-N also creates the `postgres` OS user the test cluster runs as;
# libtap-parser-sourcehandler-pgtap-perl provides pg_prove; PL/Proxy,
# pgbouncer and jq run the sharded setup of test/scale (dblink, which moves
# users between shards, is in postgresql-N itself); procps gives the fault
# scripts ps (a minbase root filesystem may lack it).
PACKAGES=(
    "postgresql-$PG_MAJOR"
    "postgresql-server-dev-$PG_MAJOR"
    "postgresql-$PG_MAJOR-pgtap"
    libtap-parser-sourcehandler-pgtap-perl
    libipc-run-perl
    "postgresql-$PG_MAJOR-plproxy"
    pgbouncer
    jq
    procps
    valgrind
)

pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || echo "$p"
    done
    if ! command -v gcc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
        echo build-essential
    fi
    # the TypeScript examples (test/betterauth, test/edgefn) run with the host's 15
    if [[ $PG_MAJOR == 15 ]] && ! command -v npm >/dev/null 2>&1; then
        echo nodejs
        echo npm
    fi
}

main() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        # Not Debian: trust the machine if the PostgreSQL toolchain is there.
        if [[ -x /usr/lib/postgresql/$PG_MAJOR/bin/pg_config ]] && command -v pg_prove >/dev/null 2>&1; then
            return 0
        fi
        echo "deps: no dpkg-query and no PostgreSQL $PG_MAJOR toolchain; install postgresql-$PG_MAJOR, its server dev files, pgTAP and pg_prove" >&2
        return 1
    fi

    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then return 0; fi

    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || { echo "deps: missing ${missing[*]} and not root (no sudo)" >&2; return 1; }
        sudo=(sudo)
    fi

    echo "deps: installing ${missing[*]}"
    local log
    log=$(mktemp /tmp/credits-apt.XXXXXX)
    # Lock::Timeout: several worktrees may reach this point at the same time.
    if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
               apt-get -o DPkg::Lock::Timeout=600 -qq update &&
           "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
               apt-get -o DPkg::Lock::Timeout=600 -qq -y --no-install-recommends install "${missing[@]}"
         } >"$log" 2>&1 </dev/null; then
        echo "deps: apt-get failed:" >&2
        tail -n 100 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"

    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} > 0)); then
        echo "deps: still missing after apt-get: ${missing[*]}" >&2
        return 1
    fi
}

main "$@"
