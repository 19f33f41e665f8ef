// The database side of the generate Edge Function: charge a generation job
// through the credits extension, and turn its errors into HTTP answers.
//
// Runs unchanged under Deno (Supabase Edge Functions) and Node: it imports
// nothing, and takes a postgres.js `sql` tag (npm:postgres) from the caller.
// Every call is one statement in its own transaction (autocommit), so it
// works through Supavisor / pgbouncer in transaction mode (create the client
// with `prepare: false` there).
//
// The connection's role calls the service functions (credits.reserve,
// capture, release, credits_consume, refund): on Supabase that is the
// SUPABASE_DB_URL role `postgres`, a member of `service_role`.  The user id is
// the `sub` of the JWT the handler verified, never a request field.

type Row = Record<string, unknown>;
/** The part of a postgres.js `sql` tag this module uses (a postgres.js Sql is one). */
// deno-lint-ignore no-explicit-any
export type Sql = (strings: TemplateStringsArray, ...values: any[]) => PromiseLike<readonly Row[]>;

/**
 * A credits.receipt as the API answers it.  The drivers (postgres.js, pg)
 * return bigint columns as strings; they are numbers here, and stay strings
 * only beyond Number.MAX_SAFE_INTEGER (2^53 - 1), where a number would be wrong.
 */
export interface Receipt {
  entry_id: number | string;
  kind: string;
  amount: number | string;
  balance: number | string;
  daily_remaining: number | string | null;
  replayed: boolean;
}

/** What a job asks for: the job id is its idempotency key and its reference. */
export interface Job {
  userId: string;
  jobId: string;
  operation: string;
  units: unknown; // passed to the database as given: 1.5 is refused there (22P02)
}

/** A bigint column's text as a number when that is exact, else the text. */
export function bigintValue(v: unknown): number | string | null {
  if (v === null || v === undefined) return null;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : String(v);
}

function receipt(row: Row | undefined): Receipt {
  if (!row) throw new Error("credits returned no receipt");
  return {
    entry_id: bigintValue(row.entry_id)!,
    kind: String(row.kind),
    amount: bigintValue(row.amount)!,
    balance: bigintValue(row.balance)!,
    daily_remaining: bigintValue(row.daily_remaining),
    replayed: row.replayed === true,
  };
}

// Sent as text and cast in SQL: postgres.js would JSON-encode a string bound to a
// jsonb parameter a second time (a JSON string, not an object: 22023 "metadata").
const METADATA = JSON.stringify({ source: "edge-function:generate" });

/** Reserve the job's cost (a hold): checks plan, daily limit, balance and rate limit. */
export async function reserve(sql: Sql, job: Job): Promise<Receipt> {
  const rows = await sql`SELECT * FROM credits.reserve(${job.userId}::uuid, ${job.operation}, ${job.units}::bigint,
                          ${job.jobId}, ${job.jobId}, ${METADATA}::text::jsonb)`;
  return receipt(rows[0]);
}

/** Charge what the job really used (at most the reserved units; null: all of them). */
export async function capture(sql: Sql, holdId: number | string, units: number | null): Promise<Receipt> {
  const rows = await sql`SELECT * FROM credits.capture(${String(holdId)}::bigint, ${units}::bigint)`;
  return receipt(rows[0]);
}

/** Give the whole reservation back (the job failed). */
export async function release(sql: Sql, holdId: number | string): Promise<Receipt> {
  const rows = await sql`SELECT * FROM credits.release(${String(holdId)}::bigint)`;
  return receipt(rows[0]);
}

/** Charge the job up front (one step; refund() if it fails). */
export async function consume(sql: Sql, job: Job): Promise<Receipt> {
  const rows = await sql`SELECT * FROM credits.credits_consume(${job.userId}::uuid, ${job.operation}, ${job.units}::bigint,
                          ${job.jobId}, ${job.jobId}, ${METADATA}::text::jsonb)`;
  return receipt(rows[0]);
}

/** Refund all of a charge; keyed by the job, so a retried refund gives back once. */
export async function refund(sql: Sql, entryId: number | string, jobId: string, reason: string): Promise<Receipt> {
  const rows = await sql`SELECT * FROM credits.refund(${String(entryId)}::bigint, NULL, ${reason}, ${"refund:" + jobId})`;
  return receipt(rows[0]);
}

/** The state of a hold ('open', 'captured', 'released', 'expired'; a timed-out open hold is 'expired'). */
export async function holdStatus(sql: Sql, holdId: number | string): Promise<string | null> {
  const rows = await sql`SELECT CASE WHEN status = 'open' AND expires_at <= now() THEN 'expired'
                                     ELSE status::text END AS status
                           FROM credits.holds WHERE id = ${String(holdId)}::bigint`;
  return rows.length ? String(rows[0].status) : null;
}

// ---- errors -------------------------------------------------------------

/** The fields of a PostgreSQL error that postgres.js (and pg) expose. */
interface PgError {
  code?: string;
  message?: string;
  detail?: string;
  hint?: string;
}

/** SQLSTATEs after which the same call, repeated, can succeed: serialization failure, deadlock. */
export const RETRYABLE = new Set(["40001", "40P01"]);

export function sqlstate(err: unknown): string | undefined {
  const code = (err as PgError | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * Run one credits call, again after a serialization failure or a deadlock
 * (each attempt is a new transaction; the idempotency key makes a repeated
 * reserve or consume charge once).  At most `attempts` tries, with jitter.
 */
export async function withRetry<T>(call: () => Promise<T>, attempts = 4): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await call();
    } catch (err) {
      if (i >= attempts || !RETRYABLE.has(sqlstate(err) ?? "")) throw err;
      await new Promise((r) => setTimeout(r, 10 * 2 ** i + Math.random() * 20));
    }
  }
}

/** An HTTP answer: status, JSON body, extra headers. */
export interface HttpError {
  status: number;
  body: Record<string, unknown>;
  headers: Record<string, string>;
}

function parseDetail(detail: string | undefined): Record<string, unknown> {
  if (!detail) return {};
  try {
    const v = JSON.parse(detail);
    return v && typeof v === "object" && !Array.isArray(v) ? v : {};
  } catch {
    return {};
  }
}

/** Seconds to put in Retry-After for a PT429 detail (retry_after_ms, or resets_at). */
function retryAfterSeconds(detail: Record<string, unknown>, now: number): number | null {
  if (typeof detail.retry_after_ms === "number") return Math.max(1, Math.ceil(detail.retry_after_ms / 1000));
  if (typeof detail.resets_at === "string") {
    const at = Date.parse(detail.resets_at);
    if (!Number.isNaN(at)) return Math.max(1, Math.ceil((at - now) / 1000));
  }
  return null;
}

/** PT429's detail says which limit: the plan's rate limit or cooldown, the daily limit, or another interval. */
function tooManyName(detail: Record<string, unknown>): string {
  if (detail.reason === "rate_limit") return "rate_limited";
  if (detail.reason === "cooldown") return "cooldown";
  if ("resets_at" in detail) return "daily_limit";
  return "too_many_requests";
}

// SQLSTATE -> [HTTP status, error name].  The client's fault is 4xx; a server
// that cannot serve now (read-only, overloaded, retries exhausted) is 503; a
// setup or data problem that needs an operator is 500.
const STATUS: Record<string, [number, string]> = {
  PT402: [402, "insufficient_credits"], // detail: needed, balance
  PT403: [403, "plan_required"], // detail: required_plan, plan
  PT409: [409, "conflict"], // detail: original_entry_id | hold_id, status | entry_id, refundable
  PT429: [429, "too_many_requests"], // detail: retry_after_ms | daily_limit, resets_at
  "22023": [400, "invalid_parameter"], // detail: field (unknown operation, too many units, bad key)
  "22001": [400, "value_too_long"], // detail: field
  "22003": [400, "out_of_range"], // detail: field
  "22P02": [400, "invalid_input"], // e.g. units 1.5 for a bigint
  "22008": [400, "out_of_range"], // detail: field
  "28000": [401, "no_user"], // only on the client functions; here the user comes from the verified JWT
  "25006": [503, "read_only"], // a replica, or the database set read-only (a full disk on Supabase)
  "40001": [503, "serialization_failure"], // retried by withRetry first
  "40P01": [503, "deadlock"], // retried by withRetry first
  "57014": [503, "statement_timeout"],
  "53300": [503, "too_many_connections"],
  "57P03": [503, "database_starting"],
  PT503: [503, "unavailable"], // sharded: the user's shard is down or the user is moving; retry, same key
  "42501": [500, "misconfigured"], // the function's role lacks EXECUTE: grant_roles / the service role
  "55000": [500, "drift"], // cached numbers changed outside the functions: run credits.reconcile()
  // Anything else is 500 "internal", among them what a DBA's change to a credits
  // table causes (23502, 42703, 42704, 42804, 42809), 0A000 (a library of
  // another version) and 27000.
};

/**
 * The HTTP answer for an error a credits call raised.  The body is
 * machine-readable: `error` (a name), `code` (the SQLSTATE), `message`,
 * `detail` (the extension's JSON detail, parsed) and `hint`; 429 and 503 carry
 * Retry-After.  A 500 keeps the database's message out of the body.
 */
export function httpError(err: unknown, now = Date.now()): HttpError {
  const e = (err ?? {}) as PgError;
  const code = sqlstate(err);
  const detail = parseDetail(e.detail);
  const headers: Record<string, string> = {};
  let [status, error] = (code && STATUS[code]) || (code?.startsWith("08") ? [503, "connection_failure"] : [500, "internal"]);
  if (code === "PT429") {
    error = tooManyName(detail);
    const secs = retryAfterSeconds(detail, now);
    if (secs !== null) headers["Retry-After"] = String(secs);
  }
  if (status === 503) headers["Retry-After"] ??= "1";
  if (status === 500) {
    return { status, body: { error, code: code ?? null, message: "internal error" }, headers };
  }
  return {
    status,
    body: { error, code, message: e.message ?? null, detail, hint: e.hint ?? null, retryable: status === 503 },
    headers,
  };
}
