# shellcheck shell=bash
# Test suites for `make test`, and the pass/fail bookkeeping.  Sourced by run.sh.
#
# Counting rules (the totals go to the final "N passed, N failed" line):
#   - pg_regress and isolation: one per test, read from either output format
#     (15's "test NAME ... ok", 16 and later's TAP "ok N - NAME").  Every test
#     we expect (one per sql/*.sql, one per test/specs/*.spec) that
#     pg_regress did not report "ok" counts as failed, so a suite that
#     cannot even start (extension fails to load, timeout) still shows up as
#     failures.  "failed (ignored)" (15 only) counts as passed, as pg_regress
#     itself does.
#   - pgTAP: one per assertion ("ok N" / "not ok N"; a "not ok ... # TODO" is
#     an expected failure and passes, as in TAP).  A file that dies, has a plan
#     mismatch or otherwise makes pg_prove fail counts the assertions it never
#     ran as failed, and at least one failure.
#
# Needs: ROOT, WORK, PG_CONFIG, PGBIN and the PG* connection variables.

PASSED=0
FAILED=0
SUITE_TIMEOUT=${CREDITS_SUITE_TIMEOUT:-1800}   # seconds, per pg_regress suite / pgTAP file
DIFF_LINES=300

# run_bounded SECONDS CMD...: CMD under `timeout`, run in the background and
# waited for, so that Ctrl-C interrupts it at once (bash defers traps while a
# foreground child runs, and timeout puts CMD in a process group of its own
# that the terminal's Ctrl-C does not reach).  on_signal in run.sh kills it.
BOUNDED_PID=
run_bounded() {
    local secs=$1
    shift
    timeout "$secs" "$@" &
    BOUNDED_PID=$!
    local rc=0
    wait "$BOUNDED_PID" || rc=$?
    BOUNDED_PID=
    return "$rc"
}

# pg_regress's result lines.  15 prints "test NAME  ... ok   12 ms" (or, in
# parallel groups, "     NAME ... ok"); 16 and later print TAP:
# "ok 1         - NAME   12 ms", "not ok 2     - NAME   12 ms" ("+" in
# parallel groups).
REGRESS_LINE_RE='^[[:space:]]*(test[[:space:]]+)?([^[:space:]]+)[[:space:]]+\.\.\.[[:space:]]+(ok|FAILED|failed \(ignored\))'
REGRESS_TAP_RE='^(not )?ok[[:space:]]+[0-9]+[[:space:]]+[-+][[:space:]]+([^[:space:]]+)'

# test_names DIR EXT: basenames of DIR/*.EXT, one per line, sorted like the Makefile.
test_names() {
    local f
    for f in "$1"/*."$2"; do
        if [[ -e $f ]]; then basename "$f" ".$2"; fi
    done | LC_ALL=C sort
}

show_file() {   # show_file TITLE FILE: print FILE bounded to DIFF_LINES lines
    [[ -s $2 ]] || return 0
    echo "---- $1 (first $DIFF_LINES lines) ----"
    head -n "$DIFF_LINES" "$2"
    local n
    n=$(wc -l <"$2")
    if ((n > DIFF_LINES)); then echo "---- ... $((n - DIFF_LINES)) more lines in $2"; fi
    return 0
}

# run_pg_regress_suite LABEL DIR EXT DIFFS MAKE_OVERRIDES...  (SUITE_ONLY: the test names, when a subset)
# Runs `make installcheck` with only one of REGRESS / ISOLATION set, so that a
# failing regress suite does not stop the isolation suite (PGXS runs both in
# one recipe and make stops at the first failing command).
run_pg_regress_suite() {
    local label=$1 dir=$2 ext=$3 diffs=$4
    shift 4
    local names=()
    if [[ -n ${SUITE_ONLY:-} ]]; then
        read -r -a names <<<"$SUITE_ONLY"   # a subset (valgrind.sh), passed as REGRESS/ISOLATION too
    else
        mapfile -t names < <(test_names "$ROOT/$dir" "$ext")
    fi
    echo "== $label: ${#names[@]} test(s)"
    if ((${#names[@]} == 0)); then
        echo "   (none)"
        return 0
    fi

    local out="$WORK/$label.log" rc=0
    rm -f "$ROOT/$diffs"
    run_bounded "$SUITE_TIMEOUT" make -C "$ROOT" --no-print-directory PG_CONFIG="$PG_CONFIG" installcheck "$@" \
        >"$out" 2>&1 </dev/null || rc=$?
    if ((rc == 124)); then echo "   $label timed out after ${SUITE_TIMEOUT}s"; fi

    local -A status=()
    local line name failed_here=0
    while IFS= read -r line; do
        if [[ $line =~ $REGRESS_LINE_RE ]]; then
            status[${BASH_REMATCH[2]}]=${BASH_REMATCH[3]}
            echo "   ${line#"${line%%[![:space:]]*}"}"
        elif [[ $line =~ $REGRESS_TAP_RE ]]; then
            name=${BASH_REMATCH[2]}
            if [[ -n ${BASH_REMATCH[1]} ]]; then status[$name]=FAILED; else status[$name]=ok; fi
            echo "   test $name ... ${status[$name]}"
        fi
    done <"$out"

    for name in "${names[@]}"; do
        case ${status[$name]:-} in
            ok | "failed (ignored)") PASSED=$((PASSED + 1)) ;;
            FAILED) FAILED=$((FAILED + 1)); failed_here=$((failed_here + 1)) ;;
            *) echo "   test $name ... did not run"; FAILED=$((FAILED + 1)); failed_here=$((failed_here + 1)) ;;
        esac
    done
    # make failed although every test passed (e.g. a crash after the tests).
    if ((rc != 0 && failed_here == 0)); then
        echo "   $label: make installcheck exited with status $rc"
        FAILED=$((FAILED + 1)); failed_here=1
    fi

    if ((failed_here > 0)); then
        show_file "$label output" "$out"
        show_file "$diffs" "$ROOT/$diffs"
    fi
    return 0
}

run_regress() {
    run_pg_regress_suite pg_regress sql sql regression.diffs ISOLATION=
}

run_isolation() {
    mkdir -p "$ROOT/test/output_iso"
    run_pg_regress_suite isolation test/specs spec test/output_iso/regression.diffs REGRESS=
}

# pgTAP: every file runs in the same database (the files BEGIN ... ROLLBACK
# themselves), one pg_prove per file so each file's result is unambiguous.
run_pgtap() {
    local files=() f
    for f in "$ROOT"/test/pgtap/*.sql; do
        if [[ -e $f ]]; then files+=("$f"); fi
    done
    echo "== pgTAP: ${#files[@]} file(s)"
    if ((${#files[@]} == 0)); then
        echo "   (none: 0 tests)"
        return 0
    fi

    local db=credits_tap setup="$WORK/pgtap-setup.log"
    if ! { "$PGBIN/dropdb" --if-exists "$db" && "$PGBIN/createdb" "$db" &&
           "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$db" \
               -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION credits'; } >"$setup" 2>&1 </dev/null; then
        # The files will fail on their own and be counted; say why.
        echo "   setup of database $db failed:"
        sed 's/^/   | /' "$setup"
    fi

    for f in "${files[@]}"; do
        run_pgtap_file "$db" "$f"
    done
    return 0
}

run_pgtap_file() {
    local db=$1 f=$2 rel=${2#"$ROOT"/}
    local out="$WORK/pgtap-${rel//\//_}.log" rc=0
    # Run from ROOT (run.sh's cwd) so pg_prove names the file relative to the repo.
    run_bounded "$SUITE_TIMEOUT" pg_prove --norc --nocolor --verbose \
        --psql-bin "$PGBIN/psql" -d "$db" "$rel" >"$out" 2>&1 </dev/null || rc=$?

    count_tap "$rel" "$out" "$rc"
    return 0
}

# count_tap NAME OUTPUT RC: add a TAP stream's results to the totals.
count_tap() {
    local rel=$1 out=$2 rc=$3
    local line planned=0 ran=0 ok=0 not_ok=0
    while IFS= read -r line; do
        if [[ $line =~ ^1\.\.([0-9]+) ]]; then
            planned=${BASH_REMATCH[1]}
        elif [[ $line =~ ^not\ ok\ [0-9]+ ]]; then
            ran=$((ran + 1))
            if [[ $line =~ \#[[:space:]]*[Tt][Oo][Dd][Oo] ]]; then ok=$((ok + 1)); else not_ok=$((not_ok + 1)); fi
        elif [[ $line =~ ^ok\ [0-9]+ ]]; then
            ran=$((ran + 1)); ok=$((ok + 1))
        fi
    done <"$out"

    # The run failed beyond the assertions it printed: the file died, the
    # plan did not match, or it timed out.  Count what never ran.
    local missing=0
    if ((rc != 0 || ran < planned)); then
        if ((planned > ran)); then missing=$((planned - ran)); fi
        if ((not_ok + missing == 0)); then missing=1; fi
    fi

    PASSED=$((PASSED + ok))
    FAILED=$((FAILED + not_ok + missing))
    if ((not_ok + missing == 0)); then
        echo "   $rel ... ok ($ok assertions)"
    else
        echo "   $rel ... FAILED ($not_ok failed, $missing not run or died, $ok passed; status $rc)"
        show_file "$rel output" "$out"
    fi
}

# Load and fault scripts: test/load/*.sh print TAP; they get the cluster's
# data directory and OS user so that they can crash and restart it.
run_load() {
    local f
    local files=()
    for f in "$ROOT"/test/load/${CREDITS_LOAD:-*}.sh; do
        if [[ -e $f ]]; then files+=("$f"); fi
    done
    echo "== load and fault: ${#files[@]} script(s)"
    for f in "${files[@]}"; do
        local rel=${f#"$ROOT"/} out="$WORK/load-$(basename "$f").log" rc=0
        PGDATA_DIR=$WORK/data PG_OS_USER=$PG_OS_USER PGBIN=$PGBIN \
            run_bounded "$SUITE_TIMEOUT" bash "$f" >"$out" 2>&1 </dev/null || rc=$?
        count_tap "$rel" "$out" "$rc"
        ensure_server_up "$rel"
    done
    return 0
}

# ensure_server_up SCRIPT: a fault or operations script that stops or crashes
# the server must bring it back; when it failed to, start it again here (one more failure) so that
# the scripts after it test what they are about rather than a dead server.
ensure_server_up() {
    "$PGBIN/psql" -X -q -d postgres -c 'SELECT 1' >/dev/null 2>&1 && return 0
    FAILED=$((FAILED + 1))
    echo "   $1 left the server down; starting it again for the next scripts"
    local pm
    pm=$(head -n 1 "$WORK/data/postmaster.pid" 2>/dev/null)
    if [[ $pm =~ ^[0-9]+$ ]] && ! ps -o stat= -p "$pm" | grep -qv Z; then
        # dead or an unreaped zombie: its lock files are stale
        rm -f "$WORK/data/postmaster.pid" "$PGHOST/.s.PGSQL.$PGPORT.lock"
    fi
    as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -t 120 start >/dev/null 2>&1 9>&- ||
        echo "   the server does not start again either"
}

# Operations tests: test/ops/*.sh print TAP, like the load scripts; they start
# extra clusters of their own (in the harness's directory) and stop them.
run_ops() {
    local f
    local files=()
    for f in "$ROOT"/test/ops/${CREDITS_OPS:-*}.sh; do
        if [[ -e $f ]]; then files+=("$f"); fi
    done
    echo "== operations (backups, replicas, upgrades): ${#files[@]} script(s)"
    for f in "${files[@]}"; do
        local rel=${f#"$ROOT"/} out="$WORK/ops-$(basename "$f").log" rc=0
        ROOT=$ROOT PG_CONFIG=$PG_CONFIG PGDATA_DIR=$WORK/data PG_OS_USER=$PG_OS_USER PGBIN=$PGBIN \
            run_bounded "$SUITE_TIMEOUT" bash "$f" >"$out" 2>&1 </dev/null || rc=$?
        count_tap "$rel" "$out" "$rc"
        ensure_server_up "$rel"
    done
    return 0
}

# The scale suite: test/scale/[0-9]*.sh print TAP; each brings up its own
# router and shards (test/scale/cluster.sh: separate clusters on private
# ports, under $WORK) and stops them.  CREDITS_SCALE picks scripts by name.
run_scale() {
    local f
    local files=()
    for f in "$ROOT"/test/scale/${CREDITS_SCALE:-[0-9]*}.sh; do
        if [[ -e $f ]]; then files+=("$f"); fi
    done
    echo "== scale (a PL/Proxy router and shards): ${#files[@]} script(s)"
    for f in "${files[@]}"; do
        local rel=${f#"$ROOT"/} out="$WORK/scale-$(basename "$f").log" rc=0
        mkdir -p "$WORK/scale"
        chown "$PG_OS_USER" "$WORK/scale" 2>/dev/null
        SCALE_DIR=$WORK/scale/$(basename "$f" .sh) SCALE_PORT=$((26000 + PG_MAJOR * 200)) PG_MAJOR=$PG_MAJOR PGBIN=$PGBIN \
            run_bounded "$SUITE_TIMEOUT" bash "$f" >"$out" 2>&1 </dev/null || rc=$?
        count_tap "$rel" "$out" "$rc"
    done
    return 0
}

# The TypeScript examples, against the test cluster through the PG*
# variables; each prints TAP.  node_modules is a cache: `npm ci` runs when it
# is missing or older than package-lock.json (the npm registry must be
# reachable then).
#   run_node_example TITLE DIR TEST   DIR under test/, TEST a .ts file in it
run_node_example() {
    local title=$1 name=$2 test=$3
    local dir=$ROOT/test/$name rel=test/$name/$test
    local out=$WORK/$name.log rc=0
    echo "== $title"
    if ! command -v npm >/dev/null 2>&1 && [[ -n ${CREDITS_IN_ROOTFS:-} ]]; then
        # the root filesystems of 17 and 18 carry PostgreSQL only; the host's 15 run covers it
        echo "ok 1 # SKIP no Node.js in the PostgreSQL $PG_MAJOR root filesystem" >"$out"
        count_tap "$rel" "$out" 0
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "not ok 1 - $title needs Node.js 20 and npm" >"$out"
        count_tap "$rel" "$out" 1
        return 0
    fi
    if [[ ! $dir/node_modules/.package-lock.json -nt $dir/package-lock.json ]]; then
        if ! run_bounded 600 npm ci --prefix "$dir" --no-audit --no-fund >"$WORK/npm-$name.log" 2>&1 </dev/null; then
            { echo "not ok 1 - npm ci in test/$name"; sed 's/^/# /' "$WORK/npm-$name.log"; } >"$out"
            count_tap "$rel" "$out" 1
            return 0
        fi
    fi
    run_bounded "$SUITE_TIMEOUT" "$dir/node_modules/.bin/tsx" "$dir/$test" \
        >"$out" 2>"$WORK/$name.err" </dev/null || rc=$?
    count_tap "$rel" "$out" "$rc"
    if ((rc != 0)); then show_file "$rel stderr" "$WORK/$name.err"; fi
    return 0
}

# The Better Auth example (test/betterauth): signup bonus from its hook.
run_betterauth() {
    run_node_example "Better Auth example" betterauth signup_bonus.test.ts
}

# The Supabase Edge Function example (examples/supabase/functions/generate),
# tested from test/edgefn with postgres.js and pg.
run_edgefn() {
    run_node_example "Supabase Edge Function example" edgefn generate.test.ts
}

print_summary() {
    echo "$PASSED passed, $FAILED failed"
}

# Exit status of `make test`: non-zero on any failure or when nothing ran.
summary_status() {
    ((FAILED == 0 && PASSED > 0))
}
