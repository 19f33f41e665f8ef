#!/usr/bin/env bash
# bench/report.sh OUT_DIR: formats a bench/run.sh result directory as markdown.
#
#   results.tsv      name clients sync impl run tps avg_ms p99_ms failed
#   ledger_sizes.tsv impl class users_touched avg_entries max_entries max_today
#   memory.txt       one line: calls=... rss_before_kb=... (key=value pairs)
#   meta.txt         comment lines describing the run
#
# Medians over runs (BENCH_RUNS) per configuration and implementation; ratios
# are credits / baseline, computed from those medians.  Plain awk (mawk-safe).
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
}
END {
    for (k in TPS) { mt[k] = median(TPS[k]); ma[k] = median(AVG[k]); mp[k] = median(P99[k]) }

    print "| case | clients | sync commit | implementation | TPS | avg ms | p99 ms | TPS vs (a) floor | TPS vs (b) plpgsql | p99 vs floor | errors |"
    print "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|"
    for (i = 1; i <= ncfg; i++) {
        cfg = cfgs[i]
        split(cfg, c, SUBSEP)
        if (c[1] ~ /^o1_/) continue
        n = split(impls[cfg], im, " ")
        for (j = 1; j <= n; j++) {
            key = cfg SUBSEP im[j]
            fl = cfg SUBSEP "floor"; pl = cfg SUBSEP "plpgsql"
            isc = (im[j] ~ /^credits/)
            rf = isc ? ratio(mt[key], mt[fl]) : ""
            rp = isc ? ratio(mt[key], mt[pl]) : ""
            pf = isc ? ratio(mp[key], mp[fl]) : ""
            name = (im[j] == "floor") ? "(a) floor" : (im[j] == "plpgsql") ? "(b) plpgsql" : \
                   (im[j] == "credits_heard") ? "credits, a listener connected" : "**credits**"
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c[1], c[2], c[3], name,
                fmt(mt[key], 0), fmt(ma[key], 3), fmt(mp[key], 3),
                rf == "" ? "" : rf "x", rp == "" ? "" : rp "x", pf == "" ? "" : pf "x",
                (key in fails) ? fails[key] : ""
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
        if (c[1] !~ /^o1_.*_shallow$/) continue
        what = c[1]; sub(/^o1_/, "", what); sub(/_shallow$/, "", what)
        deepcfg = "o1_" what "_deep" SUBSEP c[2] SUBSEP c[3]
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

    # targets
    lo = "consume_low" SUBSEP "8" SUBSEP "off"; hot = "consume_hot" SUBSEP "32" SUBSEP "off"
    print ""
    print "Targets (from the medians above):"
    print ""
    t1 = ratio(mt[lo SUBSEP "credits"], mt[lo SUBSEP "floor"]); t1b = ratio(mt[lo SUBSEP "credits"], mt[lo SUBSEP "plpgsql"])
    t2 = ratio(mt[hot SUBSEP "credits"], mt[hot SUBSEP "floor"]); t2b = ratio(mt[hot SUBSEP "credits"], mt[hot SUBSEP "plpgsql"])
    t3 = ratio(mp[lo SUBSEP "credits"], mp[lo SUBSEP "floor"])
    verdict(t1 != "" && t1 + 0 >= 0.9 && t1b + 0 >= 1.0, "consume low contention, 8 clients, sync off: " t1 "x floor (>= 0.9), " t1b "x plpgsql (>= 1.0)")
    verdict(t2 != "" && t2 + 0 >= 0.8 && t2b + 0 >= 3.0 && !((hot SUBSEP "credits") in fails),
            "hot rows, 10 users, 32 clients, sync off: " t2 "x floor (>= 0.8), " t2b "x plpgsql (>= 3), errors: " (((hot SUBSEP "credits") in fails) ? fails[hot SUBSEP "credits"] : "none"))
    verdict(t3 != "" && t3 + 0 <= 2.0, "p99 of consume at 8 clients: " t3 "x the floor p99 (<= 2)")
    q1 = ratio(mt[lo SUBSEP "credits_heard"], mt[lo SUBSEP "floor"]); q1b = ratio(mt[lo SUBSEP "credits_heard"], mt[lo SUBSEP "plpgsql"])
    q2 = ratio(mt[hot SUBSEP "credits_heard"], mt[hot SUBSEP "floor"]); q2b = ratio(mt[hot SUBSEP "credits_heard"], mt[hot SUBSEP "plpgsql"])
    q3 = ratio(mp[lo SUBSEP "credits_heard"], mp[lo SUBSEP "floor"])
    if (q1 != "")
        printf "- (with a LISTEN credits session connected, every commit notifying: low %sx floor, %sx plpgsql; hot %sx floor, %sx plpgsql; p99 %sx floor)\n", q1, q1b, q2, q2b, q3
    verdict(o1["credits", "reads"] != "" && o1["credits", "reads"] + 0 <= 1.2, "reads O(1): deep / shallow latency " o1["credits", "reads"] " (<= 1.2)")
    verdict(o1["credits", "consume"] != "" && o1["credits", "consume"] + 0 <= 1.2, "consume independent of history: deep / shallow latency " o1["credits", "consume"] " (<= 1.2)")
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
