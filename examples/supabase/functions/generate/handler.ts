// The HTTP handler of the generate Edge Function, on the web-standard
// Request / Response (Deno.serve in index.ts; Node 20 in the tests).
//
// POST /functions/v1/generate   Authorization: Bearer <the user's access token>
//   {"job_id": "<client-made id, the same on every retry>", "operation": "image", "units": 1, "input": {...}}
//
//   200 {"job_id", "state": "done", "output", "receipt"}        generated and charged
//   202 {"job_id", "state": "running" | "done", "replayed": true} the same job id again: nothing charged twice
//   4xx/5xx {"error", "code", "message", "detail", "hint"}        see httpError() in credits.ts
//   502 {"error": "generation_failed", "job_id", "restored": true} the credits went back
//
// charge "hold" (default): reserve, generate, capture the units used (or
// release everything when generation fails).  charge "upfront": consume,
// generate, refund when it fails.
import * as credits from "./credits.ts";
import { JwtError, verifyJwt, type VerifyOptions } from "./jwt.ts";

export interface GenerationRequest {
  jobId: string;
  userId: string;
  operation: string;
  units: unknown;
  input: unknown;
}

/** What the model produced; `units` is what it really used (default: all that were asked for). */
export interface Generation {
  output: unknown;
  units?: number;
}

export interface HandlerOptions {
  sql: credits.Sql;
  jwt: VerifyOptions;
  generate: (req: GenerationRequest) => Promise<Generation>;
  charge?: "hold" | "upfront";
  log?: (message: string, extra?: unknown) => void;
}

const CORS = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
  "Access-Control-Allow-Methods": "POST, OPTIONS",
};

function reply(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...CORS, ...headers, "Content-Type": "application/json" },
  });
}

function badRequest(field: string, message: string): Response {
  return reply(400, { error: "invalid_parameter", code: null, message, detail: { field }, hint: null });
}

async function parse(req: Request, userId: string): Promise<GenerationRequest | Response> {
  let body: Record<string, unknown>;
  try {
    body = await req.json();
  } catch {
    return badRequest("body", "the body is not JSON");
  }
  if (!body || typeof body !== "object") return badRequest("body", "the body is not a JSON object");
  if (typeof body.job_id !== "string" || body.job_id === "") return badRequest("job_id", "job_id must be a non-empty string");
  const operation = body.operation ?? "image";
  if (typeof operation !== "string") return badRequest("operation", "operation must be a string");
  // units go to the database as given: it refuses 0 (22023) and 1.5 (22P02).
  return { jobId: body.job_id, userId, operation, units: body.units ?? 1, input: body.input ?? null };
}

export function createHandler(opts: HandlerOptions): (req: Request) => Promise<Response> {
  const log = opts.log ?? ((m, x) => console.error(m, x));
  const run = opts.charge === "upfront" ? runUpfront : runWithHold;

  return async (req) => {
    if (req.method === "OPTIONS") return new Response(null, { status: 204, headers: CORS });
    if (req.method !== "POST") return reply(405, { error: "method_not_allowed", code: null }, { Allow: "POST, OPTIONS" });

    const auth = req.headers.get("Authorization") ?? "";
    const token = auth.match(/^Bearer\s+(\S+)$/i)?.[1];
    let userId: string;
    try {
      if (!token) throw new JwtError("no bearer token");
      userId = (await verifyJwt(token, opts.jwt)).sub;
    } catch (err) {
      if (!(err instanceof JwtError)) throw err;
      return reply(401, { error: "invalid_jwt", code: null, message: err.message, detail: { reason: err.reason } },
        { "WWW-Authenticate": 'Bearer error="invalid_token"' });
    }

    const job = await parse(req, userId);
    if (job instanceof Response) return job;
    try {
      return await run(opts, job, log);
    } catch (err) {
      const http = credits.httpError(err);
      if (http.status >= 500) log(`generate: job ${job.jobId}`, err);
      return reply(http.status, { ...http.body, job_id: job.jobId }, http.headers);
    }
  };
}

type Log = NonNullable<HandlerOptions["log"]>;

async function runWithHold(opts: HandlerOptions, job: GenerationRequest, log: Log): Promise<Response> {
  const { sql } = opts;
  const dbJob = { userId: job.userId, jobId: job.jobId, operation: job.operation, units: job.units };
  const hold = await credits.withRetry(() => credits.reserve(sql, dbJob));
  if (hold.replayed) {
    // A double tap or a retry of a job already started: never generate twice.
    const state = await credits.holdStatus(sql, hold.entry_id);
    if (state === "open") return reply(202, { job_id: job.jobId, state: "running", replayed: true, hold_id: hold.entry_id });
    if (state === "captured") return reply(202, { job_id: job.jobId, state: "done", replayed: true, hold_id: hold.entry_id });
    return reply(409, {
      error: "job_settled", code: null, job_id: job.jobId, message: `job ${job.jobId} was ${state}`,
      detail: { hold_id: hold.entry_id, status: state }, hint: "Start a new attempt with a new job_id.",
    });
  }

  let generation: Generation;
  try {
    generation = await opts.generate(job);
  } catch (err) {
    log(`generate: job ${job.jobId} failed, releasing hold ${hold.entry_id}`, err);
    const back = await settleQuietly(() => credits.release(sql, hold.entry_id));
    // back is null when the hold had already timed out (PT409): its credits went back then.
    return reply(502, { error: "generation_failed", code: null, job_id: job.jobId, restored: true, receipt: back });
  }
  const charged = await settleQuietly(() => credits.capture(sql, hold.entry_id, generation.units ?? null));
  // null: the hold timed out while the model ran (credits.hold_timeout), so nothing was charged.
  return reply(200, { job_id: job.jobId, state: "done", output: generation.output, receipt: charged, charged: charged !== null });
}

async function runUpfront(opts: HandlerOptions, job: GenerationRequest, log: Log): Promise<Response> {
  const { sql } = opts;
  const dbJob = { userId: job.userId, jobId: job.jobId, operation: job.operation, units: job.units };
  const charge = await credits.withRetry(() => credits.consume(sql, dbJob));
  if (charge.replayed) return reply(202, { job_id: job.jobId, state: "charged", replayed: true, receipt: charge });

  let generation: Generation;
  try {
    generation = await opts.generate(job);
  } catch (err) {
    log(`generate: job ${job.jobId} failed, refunding entry ${charge.entry_id}`, err);
    // A premium (bypass) plan charged 0: there is nothing to refund (refund() would say 22023).
    const back = Number(charge.amount) === 0 ? charge
      : await settleQuietly(() => credits.refund(sql, charge.entry_id, job.jobId, "generation failed"));
    return reply(502, { error: "generation_failed", code: null, job_id: job.jobId, restored: true, receipt: back });
  }
  return reply(200, { job_id: job.jobId, state: "done", output: generation.output, receipt: charge, charged: true });
}

/**
 * Capture, release or refund with retries; PT409 (the hold already timed out
 * and gave its credits back, or the refund was made) answers null.
 */
async function settleQuietly(call: () => Promise<credits.Receipt>): Promise<credits.Receipt | null> {
  try {
    return await credits.withRetry(call);
  } catch (err) {
    if (credits.sqlstate(err) === "PT409") return null;
    throw err;
  }
}
