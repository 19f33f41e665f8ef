#!/usr/bin/env bash
# bench/callgrind.sh: instructions per call of each bench path, credits against its floor,
# counted by callgrind in one backend (stable where wall-clock runs on a busy machine are not).
#
# Needs valgrind and callgrind_annotate, and credits installed for PGBIN's server.  It makes a
# throwaway cluster in BENCH_CG_DIR (as installed: no shared_preload_libraries; autovacuum off),
# seeds it with bench/run.sh (BENCH_CG_USERS users) under a plain postmaster, keeps the seeded
# database as a template, then restarts the postmaster under
#     valgrind --tool=callgrind --trace-children=yes
# so that every backend writes its own profile.  For each path, from a fresh copy of the
# template each time: one pgbench client (-M prepared, --random-seed=1) runs 100 calls, another
# 100 + BENCH_CG_CALLS; per call = (instructions of the second backend - the first) / CALLS, so
# that start-up, first calls and exit cancel out.  Profiles stay in BENCH_CG_DIR/out/<path>/
# (a.cg, b.cg: callgrind_annotate them, or diff their functions).
# Path "first": what a new server connection pays for its first call, a new backend's first
# consume minus a new backend's SELECT 1, as installed and again with the postmaster restarted
# with shared_preload_libraries = 'credits' (the library then loads once, in the postmaster).
#
# Settings: PGBIN, BENCH_CG_DIR (default a new /tmp/credits-cg.XXXXXX), BENCH_CG_PORT=56431,
# BENCH_CG_USERS=2000, BENCH_CG_CALLS=1000, BENCH_CG_PATHS="consume replay grant reads first",
# BENCH_CG_CACHE_SIM=no (yes: callgrind also simulates the caches; the profiles then count
# cache misses too, the table still shows instructions).
# Runs as root (the server as the postgres OS user) or as the server's own user.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGBIN=${PGBIN:-$(pg_config --bindir)}
DIR=${BENCH_CG_DIR:-$(mktemp -d /tmp/credits-cg.XXXXXX)}
PORT=${BENCH_CG_PORT:-56431}
USERS=${BENCH_CG_USERS:-2000}
CALLS=${BENCH_CG_CALLS:-1000}
PATHS=${BENCH_CG_PATHS:-consume replay grant reads first}
CACHE_SIM=${BENCH_CG_CACHE_SIM:-no}
OS_USER=$(id -un)
((EUID == 0)) && OS_USER=postgres
export PGHOST=$DIR PGPORT=$PORT PGUSER=$OS_USER

as_pg() { if ((EUID == 0)); then (cd "$DIR" && runuser -u "$OS_USER" -- "$@"); else (cd "$DIR" && "$@"); fi; }
stop() {
    if [[ -f $DIR/data/postmaster.pid ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}
trap stop EXIT

mkdir -p "$DIR/cg" "$DIR/out"
chown "$OS_USER" "$DIR" "$DIR/cg" 2>/dev/null || true
as_pg "$PGBIN/initdb" -D "$DIR/data" -U "$OS_USER" --no-sync >"$DIR/initdb.log" 2>&1
cat >>"$DIR/data/postgresql.conf" <<EOF
listen_addresses = ''
port = $PORT
unix_socket_directories = '$DIR'
fsync = off
synchronous_commit = off
autovacuum = off
shared_buffers = 512MB
timezone = 'UTC'
lc_messages = 'C'
EOF

echo "== seeding $USERS users (bench/run.sh, a plain postmaster)"
as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
PGBIN=$PGBIN BENCH_USERS=$USERS BENCH_DEEP_TODAY=1000 BENCH_ONLY=none BENCH_DB=credits_cg_seed \
    BENCH_OUT=$DIR/seed BENCH_ROUTER=0 bash "$BENCH/run.sh" >"$DIR/seed.log" 2>&1
"$PGBIN/psql" -X -q -d credits_cg_seed -c "VACUUM" -c "CHECKPOINT"
"$PGBIN/createdb" -T credits_cg_seed credits_cg_tpl
stop

# The postmaster under callgrind, with its options "$@".
start_under_callgrind() {
    as_pg valgrind --tool=callgrind --trace-children=yes --dump-instr=no --cache-sim="$CACHE_SIM" \
        --callgrind-out-file="$DIR/cg/callgrind.out.%p" "$PGBIN/postgres" -D "$DIR/data" "$@" \
        >"$DIR/valgrind.log" 2>&1 &
    for _ in $(seq 120); do "$PGBIN/pg_isready" -q && break; sleep 1; done
}
echo "== the postmaster under callgrind"
start_under_callgrind

# The instructions of a backend that ran $2 transactions of script $1 (users $3..$4).
backend_total() {
    local before f best='' size bs=0
    "$PGBIN/dropdb" --if-exists credits_cg_run 2>/dev/null
    "$PGBIN/createdb" -T credits_cg_tpl credits_cg_run
    sleep 4     # the createdb backend's profile is written at its exit
    before=$(ls "$DIR/cg")
    "$PGBIN/pgbench" -n -M prepared --random-seed=1 -c 1 -t "$2" -D lo="$3" -D hi="$4" -f "$1" \
        -d credits_cg_run >"$DIR/pgbench.log" 2>&1 || { cat "$DIR/pgbench.log" >&2; return 1; }
    sleep 3
    for f in "$DIR"/cg/callgrind.out.*; do    # pgbench's own backend: the largest new profile
        grep -qx "${f##*/}" <<<"$before" && continue
        size=$(stat -c %s "$f")
        if ((size > bs)); then bs=$size; best=$f; fi
    done
    echo "$best"
}
total_of() { sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$1" | head -1; }

# A new backend's first consume minus a new backend's SELECT 1 (one transaction each): the
# table row of mode $1.
first_call() {
    local impl base
    declare -A first=()
    echo 'SELECT 1;' >"$DIR/select1.pgbench"
    base=$(total_of "$(backend_total "$DIR/select1.pgbench" 1 11 "$USERS")")
    for impl in floor credits; do
        first[$impl]=$(($(total_of "$(backend_total "$BENCH/${impl}_consume.pgbench" 1 11 "$USERS")") - base))
    done
    printf '| first call, %s | %s | %s | %s |\n' "$1" "${first[floor]}" "${first[credits]}" \
        "$(awk -v f="${first[floor]}" -v c="${first[credits]}" 'BEGIN {printf "%.2f", f / c}')"
}

echo
echo "| path | (a) floor | credits | floor / credits |"
echo "|---|---:|---:|---:|"
for path in $PATHS; do
    [[ $path == first ]] && continue    # last: it restarts the postmaster preloaded
    lo=11 hi=$USERS
    [[ $path == replay ]] && lo=1 hi=$((USERS < 1000 ? USERS : 1000))
    declare -A per=()
    for impl in floor credits; do
        mkdir -p "$DIR/out/${path}_$impl"
        a=$(backend_total "$BENCH/${impl}_$path.pgbench" 100 $lo $hi)
        b=$(backend_total "$BENCH/${impl}_$path.pgbench" $((100 + CALLS)) $lo $hi)
        cp "$a" "$DIR/out/${path}_$impl/a.cg"; cp "$b" "$DIR/out/${path}_$impl/b.cg"
        per[$impl]=$((($(total_of "$b") - $(total_of "$a")) / CALLS))
    done
    printf '| %s | %s | %s | %s |\n' "$path" "${per[floor]}" "${per[credits]}" \
        "$(awk -v f="${per[floor]}" -v c="${per[credits]}" 'BEGIN {printf "%.2f", f / c}')"
    unset per
done
if [[ " $PATHS " == *" first "* ]]; then
    first_call installed
    stop
    start_under_callgrind -c shared_preload_libraries=credits
    first_call preloaded
fi
echo
echo "(instructions per call, and of a new backend's first call; profiles in $DIR/out)"
