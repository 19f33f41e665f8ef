#!/usr/bin/env bash
# The server log and refusals, printed as TAP.  A refusal (PT402/403/409/429
# raised by credits) writes PostgreSQL's own ERROR line, with its statement,
# to the server log unless credits.quiet_refusals is on; with it on, only the
# throttled `credits: denied` line remains.  Other errors are never hidden,
# not even an application's own RAISE with a PT SQLSTATE.
#
# Needs the harness environment: PGBIN, PGHOST, PGPORT, PGUSER, PGDATA_DIR
# (the server log is postgres.log next to it, as cluster.sh starts it).
set -uo pipefail

DB=credits_refusal_log
LOG=$(dirname "$PGDATA_DIR")/postgres.log
RUN=$$-$RANDOM
N=0

psql_q() { "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=0 -d "$DB" "$@" 2>/dev/null; }
ok() {   # ok CONDITION(0/1 exit) DESCRIPTION
    N=$((N + 1))
    if [[ $1 == 0 ]]; then echo "ok $N - $2"; else echo "not ok $N - $2"; fi
}
in_log() { grep -qF -- "$1" "$LOG"; }
denied_lines() { grep -c "credits: denied idempotency_conflict" "$LOG"; }

"$PGBIN/dropdb" --if-exists "$DB" 2>/dev/null
"$PGBIN/createdb" "$DB" || { echo "Bail out! createdb $DB"; exit 1; }
psql_q -c "CREATE EXTENSION credits" -c "SELECT credits.grant_credits('00000000-0000-4000-8000-00000000d101', 1, 'x', 'k')" >/dev/null
[[ -r $LOG ]] || { echo "Bail out! no server log at $LOG"; exit 1; }

# A refusal: an idempotency key reused with other parameters (PT409).
refuse() {   # refuse MARKER [SETTING]: the refused call, its statement tagged with MARKER
    psql_q -c "${2:-SELECT 1}" \
        -c "SELECT credits.grant_credits('00000000-0000-4000-8000-00000000d101', 2, 'x', 'k') /* $1 */" >/dev/null
}

before=$(denied_lines)
refuse "loud-$RUN"
ok "$(in_log "loud-$RUN"; echo $?)" "by default a refusal's ERROR line and statement are in the server log"
ok "$([[ $(denied_lines) -gt $before ]]; echo $?)" "and the throttled 'credits: denied' line too"

before=$(denied_lines)
refuse "quiet-$RUN" "SET credits.quiet_refusals = on"
ok "$(! in_log "quiet-$RUN"; echo $?)" "with credits.quiet_refusals = on the refusal's ERROR line is left out"
ok "$([[ $(denied_lines) -gt $before ]]; echo $?)" "while the throttled 'credits: denied' line is still written"

psql_q -c "SET credits.quiet_refusals = on" \
    -c "SELECT credits.grant_credits('00000000-0000-4000-8000-00000000d101', -1, 'x') /* input-$RUN */" >/dev/null
ok "$(in_log "input-$RUN"; echo $?)" "bad input (22023) is logged even with credits.quiet_refusals = on"

psql_q -c "SET credits.quiet_refusals = on" \
    -c "DO \$\$ BEGIN RAISE SQLSTATE 'PT409' USING MESSAGE = 'app-$RUN'; END \$\$" >/dev/null
ok "$(in_log "app-$RUN"; echo $?)" "an application's own PT409 is logged even with credits.quiet_refusals = on"

"$PGBIN/dropdb" "$DB" 2>/dev/null
echo "1..$N"
