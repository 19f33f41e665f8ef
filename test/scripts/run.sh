#!/usr/bin/env bash
# The harness behind `make demo`, `make test` and `make bench`.
#
#   bash test/scripts/run.sh test    build, install, throwaway cluster, run
#                                    pg_regress + isolation + pgTAP + load +
#                                    operations (test/ops) + scale (a router
#                                    and shards, test/scale) + the Better Auth
#                                    and Edge Function examples, in CI the
#                                    regress and isolation suites once more
#                                    under valgrind
#                                    (test/scripts/valgrind.sh), and end
#                                    with the line "N passed, N failed"
#   bash test/scripts/run.sh demo    same setup, then a narrated test/demo.sql
#   bash test/scripts/run.sh bench   same setup with a durable cluster, then bench/run.sh
#
# A second argument picks the PostgreSQL major (make test PG=17): 15, the
# host's, by default; 17 and 18 run this same script inside a Debian root
# filesystem that ships them (test/scripts/rootfs.sh, root only).
#
# Works on a fresh Debian 12 machine as root: missing packages are installed
# first.  The cluster lives in a mktemp dir that is stopped and removed on
# exit, failure or Ctrl-C.  Installing the extension is system-wide, so the
# install and everything that uses it run under an flock shared by all
# worktrees of this repo on the machine.
set -euo pipefail

MODE=${1:-}
PG_MAJOR=${2:-${CREDITS_PG:-15}}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCRIPTS=$ROOT/test/scripts
PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PGBIN/pg_config
LOCK_FILE=${CREDITS_LOCK_FILE:-/tmp/credits-install.lock}
WORK=
export LC_ALL=C.UTF-8 PGTZ=UTC PATH=$PATH:/usr/sbin:/sbin   # runuser, useradd
# Our make calls are independent builds, not sub-makes of `make test`: drop the
# parent's flags (a -j jobserver we cannot use, "make[1]:" prefixes).
unset MAKEFLAGS MFLAGS MAKELEVEL

# shellcheck source=test/scripts/cluster.sh
source "$SCRIPTS/cluster.sh"
# shellcheck source=test/scripts/suites.sh
source "$SCRIPTS/suites.sh"
# shellcheck source=test/scripts/valgrind.sh
source "$SCRIPTS/valgrind.sh"

cleanup() {
    local rc=$?
    set +e
    cluster_stop
    if [[ -n $WORK ]]; then rm -rf "$WORK"; fi
    exit "$rc"
}

# Ctrl-C / kill: stop a running suite's process group, then exit (-> cleanup).
on_signal() {
    if [[ -n ${BOUNDED_PID:-} ]]; then kill -TERM -- "-$BOUNDED_PID" 2>/dev/null || true; fi
    exit "$1"
}

# A setup step failed: say so, show its log, and (for `test`) still end with
# the summary line so the failure is counted.
fail_setup() {
    local what=$1 log=${2:-}
    echo "!! $what failed"
    if [[ -n $log ]]; then show_file "$what log" "$log"; fi
    if [[ $MODE == test ]]; then
        FAILED=$((FAILED + 1))
        print_summary
    fi
    exit 1
}

install_deps() {
    bash "$SCRIPTS/deps.sh" "$PG_MAJOR" >"$WORK/deps.log" 2>&1 </dev/null || fail_setup "installing dependencies" "$WORK/deps.log"
}

# -Werror here, not in the Makefile: warnings fail the build on the majors
# we test, not a packager's build with another compiler.
build() {
    make -C "$ROOT" --no-print-directory -j"$(nproc)" PG_CONFIG="$PG_CONFIG" PG_CFLAGS=-Werror \
        >"$WORK/build.log" 2>&1 </dev/null || fail_setup "build (make PG_CONFIG=$PG_CONFIG PG_CFLAGS=-Werror)" "$WORK/build.log"
    echo "== build: ok"
}

# Serialize install + run with every other harness run on this machine; the
# lock is released when this process (and so fd 9) goes away.
take_lock() {
    exec 9>>"$LOCK_FILE"
    if ! flock -n 9; then
        echo "== waiting for another credits run to finish (lock $LOCK_FILE)"
        flock 9
    fi
}

install_ext() {
    make -C "$ROOT" --no-print-directory PG_CONFIG="$PG_CONFIG" install \
        >"$WORK/install.log" 2>&1 </dev/null || fail_setup "make install" "$WORK/install.log"
}

start_cluster() {
    cluster_start "$1" >"$WORK/cluster.log" 2>&1 || fail_setup "starting the test cluster" "$WORK/cluster.log"
    echo "== cluster: $("$PG_CONFIG" --version) on 127.0.0.1:$PGPORT and $PGHOST"
}

# CREDITS_SUITES picks suites for a quicker run while developing, e.g.
# CREDITS_SUITES=load CREDITS_LOAD=abuse make test; CI runs them all.
mode_test() {
    local suite
    for suite in ${CREDITS_SUITES:-regress isolation pgtap load ops scale betterauth edgefn valgrind}; do
        "run_$suite"
    done
    if ((PASSED + FAILED == 0)); then echo "!! no tests ran"; fi
    print_summary
    summary_status
}

mode_demo() {
    "$PGBIN/createdb" credits_demo </dev/null || fail_setup "createdb credits_demo"
    # ON_ERROR_STOP off: the demo shows an expected error and carries on.
    # Errors go to stdout too, so they stay next to the statement that raised them.
    (cd "$ROOT/test" && "$PGBIN/psql" -X -e -P pager=off -v ON_ERROR_STOP=0 \
        -d credits_demo -f demo.sql </dev/null 2>&1)
}

mode_bench() {
    if [[ ! -f $ROOT/bench/run.sh ]]; then
        echo "== bench: no bench/run.sh yet, nothing to run"
        return 0
    fi
    # bench/run.sh restarts the server to measure it without and with preloading
    (cd "$ROOT" && PGBIN=$PGBIN BENCH_PGDATA=$WORK/data BENCH_PGLOG=$WORK/postgres.log \
        BENCH_PG_OS_USER=$PG_OS_USER bash bench/run.sh </dev/null)
}

# PostgreSQL 17 or 18: this script again, inside their root filesystem.
run_in_rootfs() {
    # shellcheck source=test/scripts/rootfs.sh
    source "$SCRIPTS/rootfs.sh"
    local rc=0
    rootfs_run "$PG_MAJOR" "$MODE" || rc=$?
    # Nothing ran (no root filesystem): `make test` still ends with its summary.
    if ((rc != 0)) && [[ $MODE == test && -z ${ROOTFS_STARTED:-} ]]; then
        FAILED=$((FAILED + 1))
        print_summary
    fi
    return "$rc"
}

main() {
    case $MODE in
        test | demo | bench) ;;
        *) echo "usage: $0 test|demo|bench [15|17|18]" >&2; exit 2 ;;
    esac
    trap cleanup EXIT
    trap 'on_signal 130' INT
    trap 'on_signal 143' TERM
    cd "$ROOT"
    WORK=$(mktemp -d /tmp/credits-run.XXXXXX)
    if [[ $PG_MAJOR != 15 && -z ${CREDITS_IN_ROOTFS:-} ]]; then
        run_in_rootfs
        return
    fi

    install_deps
    build
    take_lock
    install_ext
    start_cluster "$MODE"
    "mode_$MODE"
}

main
