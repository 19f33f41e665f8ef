#!/usr/bin/env bash
# bench/report.sh OUT_DIR: formats a bench/run.sh result directory as markdown.
#
#   results.tsv      mode/name clients sync impl run tps avg_ms p99_ms failed
#                    (mode: installed or preloaded, see bench/run.sh)
#   ledger_sizes.tsv impl class users_touched avg_entries max_entries max_today
#   memory.txt       one line: calls=... rss_before_kb=... (key=value pairs)
#   meta.txt         comment lines describing the run
#
# Medians over runs (BENCH_RUNS) per configuration and implementation; ratios
# are credits / baseline, computed from those medians, within one mode (its
# own floor runs).  With more than one run, a second table gives credits /
# floor run by run, their median and spread.  Plain awk (mawk-safe).
set -euo pipefail
OUT=${1:?usage: report.sh OUT_DIR}

sed 's/^# //' "$OUT/meta.txt" 2>/dev/null | sed 's/^/    /'
echo

awk -F'\t' -v memfile="$OUT/memory.txt" '
function sort_num(a, n,    i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
}
function median(list,    a, n) {
    if (list == "") return ""
    n = split(list, a, " ")
    sort_num(a, n)
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
# a string: compare it as a number with `+ 0` (awk compares strings otherwise)
function ratio(x, y) { return (x == "" || y == "" || y + 0 == 0) ? "" : sprintf("%.2f", x / y) }
function fmt(x, d) { return x == "" ? "-" : sprintf("%." d "f", x) }
function add(arr, key, v) { if (v != "") arr[key] = (key in arr) ? arr[key] " " v : v }
{
    cfg = $1 SUBSEP $2 SUBSEP $3
    key = cfg SUBSEP $4
    if (!(cfg in seen_cfg)) { seen_cfg[cfg] = 1; cfgs[++ncfg] = cfg }
    if (!(key in seen_key)) { seen_key[key] = 1; impls[cfg] = impls[cfg] " " $4 }
    add(TPS, key, $6); add(AVG, key, $7); add(P99, key, $8)
    if ($9 != "0" && $9 != "") fails[key] = fails[key] " " $9
    runs[key]++
    RT[key SUBSEP $5] = $6
    if ($5 + 0 > maxrun) maxrun = $5 + 0
}
END {
    for (k in TPS) { mt[k] = median(TPS[k]); ma[k] = median(AVG[k]); mp[k] = median(P99[k]) }

    print "| mode / case | clients | sync commit | implementation | TPS | avg ms | p99 ms | TPS vs (a) floor | TPS vs (b) plpgsql | TPS vs pgledger | p99 vs floor | errors |"
    print "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for (i = 1; i <= ncfg; i++) {
        cfg = cfgs[i]
        split(cfg, c, SUBSEP)
        if (c[1] ~ /\/o1_/) continue
        n = split(impls[cfg], im, " ")
        for (j = 1; j <= n; j++) {
            key = cfg SUBSEP im[j]
            fl = cfg SUBSEP "floor"; pl = cfg SUBSEP "plpgsql"; pg = cfg SUBSEP "pgledger"
            isc = (im[j] ~ /^credits/)
            rf = isc ? ratio(mt[key], mt[fl]) : ""
            rp = isc ? ratio(mt[key], mt[pl]) : ""
            rg = isc ? ratio(mt[key], mt[pg]) : ""
            pf = isc ? ratio(mp[key], mp[fl]) : ""
            name = (im[j] == "floor") ? "(a) floor" : (im[j] == "plpgsql") ? "(b) plpgsql" : \
                   (im[j] == "pgledger") ? "pgledger transfer" : \
                   (im[j] == "credits_heard") ? "credits, notify on + a listener" : "**credits**"
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c[1], c[2], c[3], name,
                fmt(mt[key], 0), fmt(ma[key], 3), fmt(mp[key], 3),
                rf == "" ? "" : rf "x", rp == "" ? "" : rp "x", rg == "" ? "" : rg "x", pf == "" ? "" : pf "x",
                (key in fails) ? fails[key] : ""
        }
    }

    # run by run: credits against the floor run seconds before or after it, in the same run
    if (maxrun > 1) {
        print ""
        print "credits / floor TPS run by run (BENCH_RUNS=" maxrun "; the implementations of a run ran back to back, so a"
        print "ratio within one run is not moved by load that changed between runs; the spread shows the noise):"
        print ""
        hdr = "| mode / case | clients | sync commit |"; sep = "|---|---:|---|"
        for (r = 1; r <= maxrun; r++) { hdr = hdr " run " r " |"; sep = sep "---:|" }
        print hdr " median of the runs | min - max |"; print sep "---:|---|"
        for (i = 1; i <= ncfg; i++) {
            cfg = cfgs[i]; split(cfg, c, SUBSEP)
            if (c[1] ~ /\/o1_/ || !((cfg SUBSEP "floor") in mt) || !((cfg SUBSEP "credits") in mt)) continue
            line = "| " c[1] " | " c[2] " | " c[3] " |"; list = ""; lo = ""; hi = ""
            for (r = 1; r <= maxrun; r++) {
                x = ratio(RT[cfg SUBSEP "credits" SUBSEP r], RT[cfg SUBSEP "floor" SUBSEP r])
                line = line " " (x == "" ? "-" : x "x") " |"
                if (x == "") continue
                list = list " " x
                if (lo == "" || x + 0 < lo + 0) lo = x
                if (hi == "" || x + 0 > hi + 0) hi = x
            }
            m = median(list)
            print line " " (m == "" ? "-" : sprintf("%.2fx", m)) " | " lo " - " hi " |"
        }
    }

    # O(1): one client, shallow (10 today) vs deep user
    print ""
    print "O(1) check, one client, average latency (ms): a user with 10 entries today vs one with many"
    print ""
    print "| implementation | call | 10 today | deep | deep / shallow |"
    print "|---|---|---:|---:|---:|"
    for (i = 1; i <= ncfg; i++) {
        cfg = cfgs[i]; split(cfg, c, SUBSEP)
        if (c[1] !~ /\/o1_.*_shallow$/) continue
        mode = c[1]; sub(/\/.*/, "", mode)
        what = c[1]; sub(/^.*\/o1_/, "", what); sub(/_shallow$/, "", what)
        deepcfg = mode "/o1_" what "_deep" SUBSEP c[2] SUBSEP c[3]
        n = split(impls[cfg], im, " ")
        for (j = 1; j <= n; j++) {
            s = ma[cfg SUBSEP im[j]]; d = ma[deepcfg SUBSEP im[j]]
            o1[im[j], what] = ratio(d, s)
            printf "| %s | %s | %s | %s | %s |\n", im[j], what, fmt(s, 3), fmt(d, 3), ratio(d, s)
        }
    }

    # memory
    mem = ""
    while ((getline line < memfile) > 0) if (line ~ /^calls=/) mem = line
    if (mem != "") {
        n = split(mem, kv, " ")
        for (j = 1; j <= n; j++) { split(kv[j], p, "="); M[p[1]] = p[2] }
        print ""
        printf "Memory: %s consume calls (one transaction each, after 5,000 to warm up) in one backend: " \
               "RssAnon %s -> %s -> %s kB (before, half-way, after), memory contexts %s -> %s -> %s bytes; " \
               "VmRSS %s -> %s kB (VmRSS includes the shared buffers the backend touched).\n",
               M["calls"], M["anon_before_kb"], M["anon_half_kb"], M["anon_after_kb"],
               M["contexts_before"], M["contexts_half"], M["contexts_after"], M["rss_before_kb"], M["rss_after_kb"]
    }

    # targets, per mode
    print ""
    print "Targets (from the medians above, each mode against its own floor):"
    print ""
    for (mi = 1; mi <= 2; mi++) {
        mode = (mi == 1) ? "installed" : "preloaded"
        lo = mode "/consume_low" SUBSEP "8" SUBSEP "off"; hot = mode "/consume_hot" SUBSEP "32" SUBSEP "off"
        if (!((lo SUBSEP "floor") in mt)) continue
        t1 = ratio(mt[lo SUBSEP "credits"], mt[lo SUBSEP "floor"]); t1b = ratio(mt[lo SUBSEP "credits"], mt[lo SUBSEP "plpgsql"])
        t2 = ratio(mt[hot SUBSEP "credits"], mt[hot SUBSEP "floor"]); t2b = ratio(mt[hot SUBSEP "credits"], mt[hot SUBSEP "plpgsql"])
        t3 = ratio(mp[lo SUBSEP "credits"], mp[lo SUBSEP "floor"])
        verdict(t1 + 0 >= 0.9 && t1b + 0 >= 1.0, mode ": consume low contention, 8 clients, sync off: " t1 "x floor (>= 0.9), " t1b "x plpgsql (>= 1.0)")
        if (t2 != "") verdict(t2 + 0 >= 0.8 && t2b + 0 >= 3.0 && !((hot SUBSEP "credits") in fails),
                mode ": hot rows, 10 users, 32 clients, sync off: " t2 "x floor (>= 0.8), " t2b "x plpgsql (>= 3), errors: " (((hot SUBSEP "credits") in fails) ? fails[hot SUBSEP "credits"] : "none"))
        if (t3 != "") verdict(t3 + 0 <= 1.5, mode ": p99 of consume at 8 clients: " t3 "x the floor p99 (<= 1.5)")
        g1 = ratio(mt[lo SUBSEP "credits"], mt[lo SUBSEP "pgledger"]); g2 = ratio(mt[hot SUBSEP "credits"], mt[hot SUBSEP "pgledger"])
        if (g1 != "" && g2 != "") verdict(g1 + 0 > 1 && g2 + 0 > 1, mode ": ahead of the pgledger transfer: " g1 "x at 8 clients over all users, " g2 "x on 10 hot users at 32 clients")
        q1 = ratio(mt[lo SUBSEP "credits_heard"], mt[lo SUBSEP "floor"]); q1b = ratio(mt[lo SUBSEP "credits_heard"], mt[lo SUBSEP "plpgsql"])
        q2 = ratio(mt[hot SUBSEP "credits_heard"], mt[hot SUBSEP "floor"]); q2b = ratio(mt[hot SUBSEP "credits_heard"], mt[hot SUBSEP "plpgsql"])
        q3 = ratio(mp[lo SUBSEP "credits_heard"], mp[lo SUBSEP "floor"])
        if (q1 != "")
            printf "- %s: (credits.notify = on with a LISTEN credits session connected, every commit notifying: low %sx floor, %sx plpgsql; hot %sx floor, %sx plpgsql; p99 %sx floor)\n", mode, q1, q1b, q2, q2b, q3
        for (ci = 1; ci <= 3; ci++) {
            cs = (ci == 1) ? "grant" : (ci == 2) ? "reads" : "replay"
            k = mode "/" cs SUBSEP "8" SUBSEP "off"
            r = ratio(mt[k SUBSEP "credits"], mt[k SUBSEP "floor"])
            if (r != "") verdict(r + 0 >= 0.9, mode ": " cs ", 8 clients, sync off: " r "x floor (>= 0.9)")
        }
    }
    if (o1["credits", "reads"] != "")
        verdict(o1["credits", "reads"] + 0 <= 1.2, "reads O(1): deep / shallow latency " o1["credits", "reads"] " (<= 1.2)")
    if (o1["credits", "consume"] != "")
        verdict(o1["credits", "consume"] + 0 <= 1.2, "consume independent of history: deep / shallow latency " o1["credits", "consume"] " (<= 1.2)")
    print ""
    print "(a target whose cases this run left out, BENCH_ONLY, is not listed)"
    if (mem != "") {
        growth = M["contexts_after"] - M["contexts_before"]
        growth2 = M["contexts_after"] - M["contexts_half"]
        anon = M["anon_after_kb"] - M["anon_before_kb"]
        anon2 = M["anon_after_kb"] - M["anon_half_kb"]
        # palloc memory (the contexts) must not grow at all once warm; RssAnon
        # also moves with the malloc arena (steps, not per call): bounded at 4 MB
        verdict(growth2 <= 0 && anon2 <= 4096,
                "memory: over the last " M["calls"] / 2 " calls the memory contexts grew " growth2 \
                " bytes (must be 0) and RssAnon " anon2 " kB (" sprintf("%.1f", anon2 * 1024 * 2 / M["calls"]) \
                " bytes per call; bound 4 MB); over all " M["calls"] " calls: " growth " bytes, " anon " kB")
    }
}
function verdict(ok, text) { printf "- %s %s\n", ok ? "[met]" : "[NOT met]", text }
' "$OUT/results.tsv"

if [[ -s $OUT/ledger_sizes.tsv ]]; then
    echo
    echo "Ledger size each user reached (entries, seeded history + this run):"
    echo
    echo "| users | implementation | users touched | avg entries | max entries | max entries today |"
    echo "|---|---|---:|---:|---:|---:|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s |\n", $2, $1, $3, $4, $5, $6}' "$OUT/ledger_sizes.tsv"
fi

if [[ -s $OUT/pooler.tsv ]]; then
    stall=${BENCH_POOLER_DISK_STALL_MS:-50}
    echo
    echo "Through pgbouncer (transaction mode), open loop (pgbench --rate), latency from each"
    echo "transaction's scheduled start, medians over the runs of each rate. With synchronous commit on,"
    echo "a run \"with a disk stall\" is one in which bench/disk_probe.c saw an fdatasync take $stall ms or"
    echo "more (every commit of that time waited for it); the goal is judged on the \"clean\" runs (with"
    echo "synchronous commit off, where no commit waits for the disk, on all of them; floor/credits counted)."
    echo "The floor sustains a rate when it reaches 95 % of it with p99 <= 50 ms; there the goal is credits"
    echo "p99 <= 1.2 x floor's."
    echo
    echo "| mode | sync commit | phase | rate | floor TPS | credits TPS | floor p50 / p95 / p99 ms | credits p50 / p95 / p99 ms | p99 ratio, all runs | clean runs | floor / credits p99, clean | p99 ratio, clean | goal |"
    echo "|---|---|---|---:|---:|---:|---|---|---:|---:|---|---:|---|"
    awk -F'\t' -v stall="$stall" '
    function sort_num(a, n,    i, j, t) {
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
    }
    function median(list,    a, n) {
        if (list == "") return ""
        n = split(list, a, " "); sort_num(a, n)
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function count(list,    a) { return list == "" ? 0 : split(list, a, " ") }
    function add(arr, key, v) { if (v != "" && v != "-") arr[key] = (key in arr) ? arr[key] " " v : v }
    function f(x, d) { return x == "" ? "-" : sprintf("%." d "f", x) }
    function ratio(a, b) { return (a != "" && b + 0 > 0) ? sprintf("%.2f", a / b) : "" }
    $3 !~ /^call_/ {
        k = $1 SUBSEP $2 SUBSEP $3 SUBSEP $5
        if (!(k in seen)) { seen[k] = 1; order[++n] = k }
        add(TPS, k SUBSEP $4, $7); add(P50, k SUBSEP $4, $8); add(P95, k SUBSEP $4, $9); add(P99, k SUBSEP $4, $10)
        if ($2 == "off" || ($12 != "" && $12 != "-" && $12 + 0 < stall)) { add(CTPS, k SUBSEP $4, $7); add(C99, k SUBSEP $4, $10) }
        if ($11 != "" && $11 != "0") failed[k, $4] = failed[k, $4] " " $11
    }
    $3 ~ /^call_/ { call[$1, $3, $4] = $8; conn[$1, $3, $4] = $9; modes[$1] = 1 }
    END {
        for (i = 1; i <= n; i++) {
            split(order[i], c, SUBSEP)
            k = order[i]
            ft = median(TPS[k, "floor"]); ct = median(TPS[k, "credits"])
            f99 = median(P99[k, "floor"]); c99 = median(P99[k, "credits"])
            cf99 = median(C99[k, "floor"]); cc99 = median(C99[k, "credits"]); cft = median(CTPS[k, "floor"])
            rc = ratio(cc99, cf99)
            goal = ""
            if (c[3] == "steady") {
                if (cf99 == "" || cc99 == "") goal = "unresolved: the disk stalled in every run of one side"
                else if (cft + 0 < 0.95 * c[4] || cf99 + 0 > 50) goal = "floor saturated"
                else goal = (rc + 0 <= 1.2) ? "met" : "NOT met"
            }
            fl = ((k SUBSEP "credits") in failed) ? " (failed" failed[k, "credits"] ")" : ""
            printf "| %s | %s | %s | %s | %s | %s%s | %s / %s / %s | %s / %s / %s | %s | %d / %d | %s / %s | %s | %s |\n",
                c[1], c[2], c[3], c[4], f(ft, 0), f(ct, 0), fl,
                f(median(P50[k, "floor"]), 2), f(median(P95[k, "floor"]), 2), f(f99, 2),
                f(median(P50[k, "credits"]), 2), f(median(P95[k, "credits"]), 2), f(c99, 2), ratio(c99, f99),
                count(C99[k, "floor"]), count(C99[k, "credits"]), f(cf99, 2), f(cc99, 2), rc, goal
        }
        for (m in modes) {
            printf "\nA backend'"'"'s first call (%s; pgbench -C, a new connection per transaction, 2 clients, straight to the server) against the same call in a warm backend, average ms:\n\n", m
            print "| implementation | first call (with connection) | warm call | connection |"
            print "|---|---:|---:|---:|"
            printf "| floor | %s | %s | %s |\n", call[m, "call_first", "floor"], call[m, "call_warm", "floor"], conn[m, "call_first", "floor"]
            printf "| credits | %s | %s | %s |\n", call[m, "call_first", "credits"], call[m, "call_warm", "credits"], conn[m, "call_first", "credits"]
        }
    }' "$OUT/pooler.tsv"
fi
