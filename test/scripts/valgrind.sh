# shellcheck shell=bash
# The regression and isolation suites once more, with every server process
# under Valgrind's memcheck.  Sourced by run.sh; part of `make test`.
#
#   On in CI (CI=true); locally only with CREDITS_VALGRIND=1 (it takes
#   minutes).  CREDITS_VALGRIND=0 skips it in CI too.
#
# The test cluster is restarted with pg_ctl -p pointing at a wrapper that
# runs postgres under valgrind (forked backends stay under it, one log per
# process); credits.so has debug information, so its frames name our
# source files (full paths: --fullpath-after=), postgres's do not.  Then
# the suites below run against it, counted like the normal
# runs, and the logs are read: every invalid read, write or free, use of an
# uninitialised value or overlapping copy whose stack passes through
# credits.so is one failure.  "Syscall param ... uninitialised byte(s)" is
# not counted: PostgreSQL writes struct padding to WAL, files and sockets,
# also when a buffer is flushed while a credits function runs.  Debian's postgres is not built with
# USE_VALGRIND, so memory freed back to a memory context (not to malloc) is
# not seen; errors entirely inside postgres are PostgreSQL's own (padding
# written to disk, see test/valgrind.supp) and are only listed.
#
# Suites: every regression test and isolation spec except perf_* (left out
# to keep the run short: they replay and re-run paths the others cover) and
# two timing-dependent specs (see VALGRIND_SKIP_RE).
# Measured on 2 cores: about 6 minutes (pg_regress 4, dba_changes most of
# it; isolation 2), on top of the normal run.
#
# Needs: ROOT, WORK, PGBIN, PG_OS_USER, the PG* variables; cluster.sh and
# suites.sh sourced.

# Specs that depend on timing, left to the normal run: ratelimit_burst (under
# valgrind's slowdown its four waiting sessions finish after the step that
# counts them) and holds_capture_vs_sweep (a 1 s hold timeout that a slowed
# reserve and capture outlast).  Their functions run under valgrind in the
# other tests.
VALGRIND_SKIP_RE='^perf_|^ratelimit_burst$|^holds_capture_vs_sweep$'

valgrind_wanted() {
    case ${CREDITS_VALGRIND:-} in
        0) return 1 ;;
        1) return 0 ;;
    esac
    # once per CI run: with the host's 15 (the 17 and 18 runs in their root
    # filesystems run the same C)
    [[ ${CI:-} == true && -z ${CREDITS_IN_ROOTFS:-} ]]
}

# The names of DIR/*.EXT that run under valgrind, space-separated.
valgrind_names() {
    test_names "$ROOT/$1" "$2" | grep -Ev "$VALGRIND_SKIP_RE" | tr '\n' ' '
}

valgrind_start() {
    local vg=$WORK/valgrind
    mkdir -p "$vg/logs"
    cp "$ROOT/test/valgrind.supp" "$vg/valgrind.supp"
    cat >"$vg/postgres" <<EOF
#!/bin/sh
exec valgrind --quiet --tool=memcheck --trace-children=yes --leak-check=no \\
    --error-limit=no --num-callers=40 --read-var-info=no --fullpath-after= \\
    --suppressions=$vg/valgrind.supp --gen-suppressions=all \\
    --log-file=$vg/logs/%p.log $PGBIN/postgres "\$@"
EOF
    chmod 755 "$vg/postgres"
    chown -R "$PG_OS_USER" "$vg"
    cluster_stop
    # jit off: LLVM-generated code and its dlopen are not what is under test
    as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -p "$vg/postgres" -l "$WORK/postgres-valgrind.log" \
        -o "-c jit=off" -w -t 600 start >"$WORK/pg_ctl-valgrind.log" 2>&1 9>&-
}

# One TAP line per valgrind error through credits.so, "ok" when there is none.
valgrind_report() {
    local out=$1 n=0 log
    local -a ours=()
    for log in "$WORK"/valgrind/logs/*.log; do
        [[ -s $log ]] || continue
        # an error record: "==PID== Kind ..." up to the blank "==PID== " line
        while IFS= read -r record; do
            ours+=("$record")
        done < <(awk -v ours="credits\\.so|$ROOT/src/" '
            /^==[0-9]+== (Invalid (read|write|free)|Mismatched free|Use of uninitialised|Conditional jump|Source and destination overlap)/ { rec = $0; next }
            /^==[0-9]+== [A-Z]/ { rec = ""; next }
            /^==[0-9]+== *$/    { if (rec != "" && rec ~ ours) print rec; rec = ""; next }
            /^==[0-9]+==    (at|by) / { if (rec != "") rec = rec " | " substr($0, index($0, $2)) }
        ' "$log" | sed "s|^|$(basename "$log"): |")
    done
    {
        echo "1..$((${#ours[@]} > 0 ? ${#ours[@]} : 1))"
        if ((${#ours[@]} == 0)); then
            echo "ok 1 - no memcheck error through credits.so"
        fi
        for record in "${ours[@]}"; do
            n=$((n + 1))
            echo "not ok $n - ${record:0:2000}"
        done
    } >"$out"
}

run_valgrind() {
    if ! valgrind_wanted; then
        echo "== valgrind: skipped (runs in CI, or with CREDITS_VALGRIND=1)"
        return 0
    fi
    if ! command -v valgrind >/dev/null 2>&1; then
        echo "== valgrind: not installed (apt-get install valgrind)"
        FAILED=$((FAILED + 1))
        return 0
    fi
    local started=$SECONDS
    echo "== valgrind: restarting the cluster under memcheck"
    if ! valgrind_start; then
        echo "   could not start postgres under valgrind"
        show_file "pg_ctl" "$WORK/pg_ctl-valgrind.log"
        show_file "postgres log" "$WORK/postgres-valgrind.log"
        FAILED=$((FAILED + 1))
        return 0
    fi
    local regress isolation
    regress=$(valgrind_names sql sql)
    isolation=$(valgrind_names test/specs spec)
    SUITE_ONLY="$regress" run_pg_regress_suite "valgrind pg_regress" sql sql regression.diffs \
        ISOLATION= REGRESS="$regress"
    mkdir -p "$ROOT/test/output_iso"
    SUITE_ONLY="$isolation" run_pg_regress_suite "valgrind isolation" test/specs spec \
        test/output_iso/regression.diffs REGRESS= ISOLATION="$isolation"
    cluster_stop
    valgrind_report "$WORK/valgrind-report.tap"
    count_tap "valgrind memcheck" "$WORK/valgrind-report.tap" 0
    echo "   valgrind: $(ls "$WORK"/valgrind/logs | wc -l) process log(s)," \
        "$(grep -l '^==[0-9]*== [A-Z]' "$WORK"/valgrind/logs/*.log 2>/dev/null | wc -l) with an error;" \
        "$((SECONDS - started)) s"
}
