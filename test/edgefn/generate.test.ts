// The Supabase Edge Function example (examples/supabase/functions/generate)
// under Node, against the test cluster of `make test` (PGHOST, PGPORT,
// PGUSER), with the npm drivers postgres.js (what the function uses) and pg.
// Requests go through the function's own handler as web-standard Requests;
// only the model call is the test's.  Also proves what the README says the
// drivers return.  Prints TAP.
import { createHmac, randomUUID, webcrypto } from "node:crypto";
import { execFileSync, spawn } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import postgres from "postgres";
import * as credits from "../../examples/supabase/functions/generate/credits.ts";
import { createHandler, type GenerationRequest, type HandlerOptions } from "../../examples/supabase/functions/generate/handler.ts";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, "../..");
const DATABASE = "credits_edgefn";
const SECRET = "super-secret-jwt-token-with-at-least-32-characters-long";
const FUNCTION_ROLE = "edgefn_function"; // plays Supabase's `postgres`: a BYPASSRLS member of the admin role

let planned = 0;
let failed = 0;
function ok(pass: boolean, name: string, got?: unknown): void {
  planned += 1;
  console.log(`${pass ? "ok" : "not ok"} ${planned} - ${name}`);
  if (!pass) {
    failed += 1;
    console.log(`# got: ${JSON.stringify(got, (_k, v) => (typeof v === "bigint" ? v.toString() : v))}`);
  }
}

// ---- tokens ---------------------------------------------------------------

const b64 = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);

function claims(sub: string, extra: Record<string, unknown> = {}) {
  return { sub, role: "authenticated", aud: "authenticated", exp: now() + 3600, iat: now(), ...extra };
}

function hs256(payload: Record<string, unknown>, secret = SECRET, header: Record<string, unknown> = { alg: "HS256", typ: "JWT" }): string {
  const signing = `${b64(header)}.${b64(payload)}`;
  return `${signing}.${createHmac("sha256", secret).update(signing).digest("base64url")}`;
}

async function es256Keys() {
  const pair = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const pub = { ...(await webcrypto.subtle.exportKey("jwk", pair.publicKey)), kid: "key-1", alg: "ES256", use: "sig" };
  const sign = async (payload: Record<string, unknown>) => {
    const signing = `${b64({ alg: "ES256", typ: "JWT", kid: "key-1" })}.${b64(payload)}`;
    const sig = await webcrypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, pair.privateKey, Buffer.from(signing));
    return `${signing}.${Buffer.from(sig).toString("base64url")}`;
  };
  return { jwks: { keys: [pub] }, sign };
}

// ---- requests -------------------------------------------------------------

function request(token: string | null, body: unknown, method = "POST"): Request {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  return new Request("http://localhost/functions/v1/generate", {
    method, headers, body: method === "POST" ? JSON.stringify(body) : undefined,
  });
}

async function call(handler: (r: Request) => Promise<Response>, req: Request) {
  const res = await handler(req);
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}

/** A model that succeeds, or throws; counts its calls; can be held until released. */
function model(opts: { fail?: boolean; units?: number; gate?: Promise<void> } = {}) {
  const calls: GenerationRequest[] = [];
  const generate = async (job: GenerationRequest) => {
    calls.push(job);
    if (opts.gate) await opts.gate;
    if (opts.fail) throw new Error("the model timed out");
    return { output: { url: `https://cdn.example.com/${job.jobId}.png` }, units: opts.units };
  };
  return { calls, generate };
}

async function main(): Promise<void> {
  const admin = new pg.Client({ database: process.env.PGDATABASE ?? "postgres" });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${DATABASE}`);
  await admin.query(`CREATE DATABASE ${DATABASE}`);
  await admin.end();

  // Setup as the superuser (pg): the extension, the roles, a test plan.
  const su = new pg.Pool({ database: DATABASE, max: 2 });
  await su.query("CREATE EXTENSION credits");
  await su.query(`DO $$ BEGIN
      CREATE ROLE edgefn_client NOLOGIN;
      CREATE ROLE edgefn_admin NOLOGIN;
      CREATE ROLE ${FUNCTION_ROLE} LOGIN BYPASSRLS IN ROLE edgefn_admin;
      CREATE ROLE edgefn_stranger LOGIN;
    EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
  await su.query("SELECT credits.grant_roles('edgefn_client', 'edgefn_admin')");
  await su.query(`INSERT INTO credits.plans (name, daily_limit, signup_bonus, monthly_allocation, bypass_credits, rate_burst, rate_per_second)
                  VALUES ('edge_slow', NULL, 50, 0, false, 1, 0.01)`);
  await su.query(`INSERT INTO credits.operations (name, cost, required_plan) VALUES ('edge_4k', 2, 'pro')`);
  const q = async (text: string, params: unknown[] = []) => (await su.query(text, params)).rows;
  const balance = async (u: string) => Number((await q("SELECT credits.balance($1) AS b", [u]))[0].b);
  const daily = async (u: string) => Number((await q("SELECT credits.daily_available($1) AS d", [u]))[0].d);
  const entries = async (ref: string) =>
    (await q("SELECT kind FROM credits.ledger WHERE reference = $1 ORDER BY id", [ref])).map((r) => r.kind);

  const connect = (user: string, extra: Record<string, unknown> = {}) =>
    postgres({ host: "127.0.0.1", port: Number(process.env.PGPORT), user, database: DATABASE, max: 4,
               prepare: false, onnotice: () => {}, ...extra });
  const sql = connect(FUNCTION_ROLE);
  const handlerWith = (m: ReturnType<typeof model>, more: Partial<HandlerOptions> = {}) =>
    createHandler({ sql, jwt: { hs256Secret: SECRET }, generate: m.generate, log: () => {}, ...more });

  // ---- what the drivers return ---------------------------------------------
  {
    const u = randomUUID();
    const viaPg = (await su.query("SELECT * FROM credits.grant_credits($1, 100, 'drivers')", [u])).rows[0];
    ok(typeof viaPg.balance === "string" && viaPg.balance === "106" && typeof viaPg.entry_id === "string",
      "pg returns the receipt's bigint columns as strings", viaPg);
    const [viaJs] = await sql`SELECT * FROM credits.credits_consume(${u}::uuid, 'image')`;
    ok(typeof viaJs.balance === "string" && viaJs.balance === "105" && typeof viaJs.amount === "string",
      "postgres.js returns the receipt's bigint columns as strings", viaJs);
    // PostgREST builds an RPC's body with PostgreSQL's JSON functions (json_agg of the result).
    const body = (await q(`SELECT coalesce(json_agg(_postgrest_t), '[]')::character varying AS body
                             FROM credits.credits_consume($1, 'image') _postgrest_t`, [u]))[0].body;
    const parsed = JSON.parse(body)[0];
    ok(typeof parsed.balance === "number" && parsed.balance === 104 && typeof parsed.entry_id === "number",
      "a PostgREST body (json_agg of the receipt) carries bigints as JSON numbers", body);

    const listener = new pg.Client({ database: DATABASE });
    await listener.connect();
    await listener.query("LISTEN credits");
    const heard = new Promise<string>((resolve) => {
      listener.on("notification", (n) => resolve(n.payload ?? ""));
      setTimeout(() => resolve("{}"), 5000).unref();
    });
    const writer = new pg.Client({ database: DATABASE });
    await writer.connect();
    await writer.query("SET credits.notify = on"); // the default; said here so that a changed default fails nothing else
    await writer.query("SELECT credits.grant_credits($1, 1, 'notify')", [u]);
    await writer.end();
    const payload = JSON.parse(await heard);
    ok(Object.keys(payload).join() === "user_ref" && /^[0-9a-f]{32}$/.test(payload.user_ref),
      "the NOTIFY credits payload is {user_ref: string}: no balance, no numbers", payload);
    await listener.end();

    const pgBig = new pg.Client({ database: DATABASE,
      types: { getTypeParser: ((oid: number, format?: string) => oid === 20 ? BigInt : pg.types.getTypeParser(oid, format as "text")) as typeof pg.types.getTypeParser } });
    await pgBig.connect();
    const asBig = (await pgBig.query("SELECT credits.balance($1) AS b", [u])).rows[0].b;
    await pgBig.end();
    const jsBig = postgres({ host: "127.0.0.1", port: Number(process.env.PGPORT), database: DATABASE, types: { bigint: postgres.BigInt } });
    const [viaJsBig] = await jsBig`SELECT credits.balance(${u}::uuid) AS b`;
    await jsBig.end();
    ok(typeof asBig === "bigint" && asBig === 105n && typeof viaJsBig.b === "bigint" && viaJsBig.b === 105n,
      "pg with BigInt as the int8 parser, postgres.js with types.bigint = postgres.BigInt: BigInt values", [String(asBig), String(viaJsBig.b)]);

    const code = async (f: () => PromiseLike<unknown>) => { try { await f(); return "none"; } catch (e) { return credits.sqlstate(e); } };
    ok((await code(() => su.query("SELECT credits.credits_consume($1, 'image', $2)", [u, 1.5]))) === "22P02",
      "pg: fractional units (1.5) are 22P02");
    ok((await code(() => sql`SELECT credits.credits_consume(${u}::uuid, 'image', ${1.5}::bigint)`)) === "22P02",
      "postgres.js: fractional units (1.5) are 22P02");
    // PostgREST reads an RPC's JSON arguments with json_to_record into the parameter types.
    ok((await code(() => su.query(`SELECT * FROM json_to_record('{"units": 1.5}') AS pgrst_args(units bigint)`))) === "22P02",
      "PostgREST's way of reading arguments (json_to_record): units 1.5 are 22P02");
    ok(credits.bigintValue("9007199254740993") === "9007199254740993" && credits.bigintValue("42") === 42,
      "bigintValue keeps a string beyond 2^53 - 1, a number below");
  }

  // ---- success, fewer units, double tap ---------------------------------------
  {
    const u = randomUUID();
    await q("SELECT credits.grant_credits($1, 100, 'pack')", [u]);
    const before = await balance(u);
    const m = model();
    const r = await call(handlerWith(m), request(hs256(claims(u)), { job_id: "job-ok", operation: "image", units: 3 }));
    ok(r.status === 200 && r.body.state === "done" && r.body.output?.url?.endsWith("job-ok.png"), "success: 200 with the output", r);
    ok(r.body.receipt?.amount === -3 && r.body.receipt?.balance === before - 3 && typeof r.body.receipt?.balance === "number",
      "success: the receipt charges 3 credits, numbers in the body", r.body);
    ok((await balance(u)) === before - 3, "success: the balance went down by 3");
    ok((await entries("job-ok")).join() === "hold,release,capture", "success: hold, then capture (release + capture)", await entries("job-ok"));
    ok(m.calls.length === 1 && m.calls[0].userId === u, "the model ran once, for the JWT's user", m.calls);

    const fewer = await call(handlerWith(model({ units: 2 })), request(hs256(claims(u)), { job_id: "job-fewer", operation: "image", units: 3 }));
    ok(fewer.status === 200 && fewer.body.receipt?.amount === -2, "a job that used 2 of 3 units is charged 2", fewer.body);

    let open!: () => void;
    const gate = new Promise<void>((r2) => { open = r2; });
    const slow = model({ gate });
    const h = handlerWith(slow);
    const b0 = await balance(u);
    const tapA = call(h, request(hs256(claims(u)), { job_id: "job-tap", operation: "image" }));
    const tapB = call(h, request(hs256(claims(u)), { job_id: "job-tap", operation: "image" }));
    // the second tap is answered while the first still runs its model
    const second = await Promise.race([tapA, tapB]);
    open();
    const [a, b] = await Promise.all([tapA, tapB]);
    ok(second.status === 202 && second.body.state === "running" && second.body.replayed === true,
      "double tap: the second request answers 202 running, replayed", second);
    ok([a.status, b.status].sort().join() === "200,202", "double tap: one 200 and one 202", [a.status, b.status]);
    ok(slow.calls.length === 1, "double tap: the model ran once", slow.calls.length);
    ok((await balance(u)) === b0 - 1 && (await entries("job-tap")).filter((k) => k === "capture").length === 1,
      "double tap: charged once", await entries("job-tap"));
    const again = await call(h, request(hs256(claims(u)), { job_id: "job-tap", operation: "image" }));
    ok(again.status === 202 && again.body.state === "done" && (await balance(u)) === b0 - 1 && slow.calls.length === 1,
      "a retry after the job finished: 202 done, no charge, no generation", again.body);
    const other = await call(h, request(hs256(claims(u)), { job_id: "job-tap", operation: "image", units: 2 }));
    ok(other.status === 409 && other.body.code === "PT409" && other.body.error === "conflict" &&
       typeof other.body.detail?.original_entry_id === "number", "the same job id with other units: 409, original_entry_id", other.body);
  }

  // ---- refusals -----------------------------------------------------------
  {
    const u = randomUUID(); // the free plan's signup bonus: 6 credits
    const m = model();
    const r = await call(handlerWith(m), request(hs256(claims(u)), { job_id: "job-poor", operation: "video_second", units: 4 }));
    ok(r.status === 402 && r.body.error === "insufficient_credits" && r.body.code === "PT402" &&
       r.body.detail?.needed === 20 && r.body.detail?.balance === 6 && typeof r.body.hint === "string",
      "out of credits: 402 with needed and balance", r.body);
    ok(m.calls.length === 0 && (await entries("job-poor")).length === 0 && (await balance(u)) === 6,
      "out of credits: no generation, nothing written");

    const slowUser = randomUUID();
    await q("SELECT credits.set_plan($1, 'edge_slow')", [slowUser]);
    await q("SELECT credits.grant_credits($1, 50, 'pack')", [slowUser]);
    const h = handlerWith(model());
    const first = await call(h, request(hs256(claims(slowUser)), { job_id: "job-rl-1" }));
    const limited = await call(h, request(hs256(claims(slowUser)), { job_id: "job-rl-2" }));
    const ms = limited.body.detail?.retry_after_ms;
    ok(first.status === 200 && limited.status === 429 && limited.body.error === "rate_limited" && limited.body.code === "PT429",
      "rate limited: 429 rate_limited", limited.body);
    ok(typeof ms === "number" && ms > 90000 && ms <= 100000 && limited.headers.get("Retry-After") === String(Math.ceil(ms / 1000)),
      "rate limited: detail.retry_after_ms, and Retry-After in seconds", { ms, h: limited.headers.get("Retry-After") });

    const dayUser = randomUUID();
    await q("SELECT credits.grant_credits($1, 50, 'pack')", [dayUser]);
    const hd = handlerWith(model());
    for (let i = 1; i <= 5; i++) await call(hd, request(hs256(claims(dayUser)), { job_id: `job-day-${i}` }));
    const sixth = await call(hd, request(hs256(claims(dayUser)), { job_id: "job-day-6" }));
    const retry = Number(sixth.headers.get("Retry-After"));
    ok(sixth.status === 429 && sixth.body.error === "daily_limit" && sixth.body.detail?.daily_limit === 5 &&
       typeof sixth.body.detail?.resets_at === "string" && retry >= 1 && retry <= 86400,
      "daily limit: 429 daily_limit with resets_at, Retry-After until then", { body: sixth.body, retry });

    const fourK = await call(handlerWith(model()), request(hs256(claims(u)), { job_id: "job-4k", operation: "edge_4k" }));
    ok(fourK.status === 403 && fourK.body.error === "plan_required" && fourK.body.detail?.required_plan === "pro",
      "an operation of a better plan: 403 plan_required", fourK.body);
    const unknown = await call(handlerWith(model()), request(hs256(claims(u)), { job_id: "job-x", operation: "teleport" }));
    ok(unknown.status === 400 && unknown.body.code === "22023" && unknown.body.detail?.field === "operation",
      "an unknown operation: 400 22023, field operation", unknown.body);
    const half = await call(handlerWith(model()), request(hs256(claims(u)), { job_id: "job-half", units: 1.5 }));
    ok(half.status === 400 && half.body.code === "22P02" && half.body.error === "invalid_input",
      "fractional units: 400 22P02", half.body);
    const zero = await call(handlerWith(model()), request(hs256(claims(u)), { job_id: "job-zero", units: 0 }));
    ok(zero.status === 400 && zero.body.code === "22023" && zero.body.detail?.field === "units", "0 units: 400 22023, field units", zero.body);
    const longKey = await call(handlerWith(model()), request(hs256(claims(u)), { job_id: "j".repeat(300) }));
    ok(longKey.status === 400 && longKey.body.code === "22001", "a job id over 255 characters: 400 22001", longKey.body);
  }

  // ---- generation failure: the credits come back -------------------------
  {
    const u = randomUUID();
    await q("SELECT credits.grant_credits($1, 100, 'pack')", [u]);
    const [b0, d0] = [await balance(u), await daily(u)];
    const failing = model({ fail: true });
    const r = await call(handlerWith(failing), request(hs256(claims(u)), { job_id: "job-fail", operation: "video_second", units: 4 }));
    ok(r.status === 502 && r.body.error === "generation_failed" && r.body.restored === true && r.body.receipt?.kind === "release",
      "generation failure (hold): 502, released", r.body);
    ok((await balance(u)) === b0 && (await daily(u)) === d0 && failing.calls.length === 1,
      "generation failure (hold): balance and today's count restored", { b: await balance(u), d: await daily(u) });
    ok((await entries("job-fail")).join() === "hold,release", "generation failure (hold): a hold and its release", await entries("job-fail"));

    const up = handlerWith(model({ fail: true }), { charge: "upfront" });
    const r2 = await call(up, request(hs256(claims(u)), { job_id: "job-fail-up", operation: "video_second", units: 2 }));
    ok(r2.status === 502 && r2.body.receipt?.kind === "refund" && r2.body.receipt?.amount === 10,
      "generation failure (upfront): 502, refunded 10", r2.body);
    ok((await balance(u)) === b0 && (await daily(u)) === d0 && (await entries("job-fail-up")).join() === "consume,refund",
      "generation failure (upfront): balance and today's count restored", { b: await balance(u), e: await entries("job-fail-up") });
    const good = await call(handlerWith(model(), { charge: "upfront" }), request(hs256(claims(u)), { job_id: "job-up" }));
    ok(good.status === 200 && good.body.receipt?.kind === "consume" && (await balance(u)) === b0 - 1, "success (upfront): 200, consumed 1", good.body);
  }

  // ---- bad tokens: 401 --------------------------------------------------
  {
    const u = randomUUID();
    const m = model();
    const h = handlerWith(m);
    const cases: [string, string | null][] = [
      ["no Authorization header", null],
      ["not a JWT", "abc"],
      ["signed with another secret", hs256(claims(u), "another-secret-another-secret-another-secret")],
      ["expired", hs256(claims(u, { exp: now() - 120 }))],
      ["alg none", `${b64({ alg: "none", typ: "JWT" })}.${b64(claims(u))}.`],
      ["the anon key (role anon)", hs256(claims(u, { role: "anon", aud: undefined }))],
      ["sub not a uuid", hs256(claims("user_2NNEqL2nrIRdJ194ndJqAHwEfxC"))],
      ["payload changed after signing", (() => {
        const [h0, , s] = hs256(claims(u)).split(".");
        return `${h0}.${b64(claims(randomUUID()))}.${s}`;
      })()],
    ];
    for (const [name, token] of cases) {
      const r = await call(h, request(token, { job_id: `job-jwt-${name}` }));
      ok(r.status === 401 && r.body.error === "invalid_jwt" && typeof r.body.detail?.reason === "string" &&
         r.headers.get("WWW-Authenticate")?.startsWith("Bearer"), `bad JWT (${name}): 401`, r.body);
    }
    ok(m.calls.length === 0 && (await q("SELECT 1 FROM credits.accounts WHERE user_id = $1", [u])).length === 0,
      "bad JWTs: no generation, no account");

    const { jwks, sign } = await es256Keys();
    const es = createHandler({ sql, jwt: { jwks }, generate: model().generate, log: () => {} });
    const r = await call(es, request(await sign(claims(u)), { job_id: "job-es256" }));
    ok(r.status === 200 && r.body.receipt?.amount === -1, "an ES256 token checked against SUPABASE_JWKS: 200", r.body);
    const forged = await call(es, request(hs256(claims(u), JSON.stringify(jwks.keys[0])), { job_id: "job-forged" }));
    ok(forged.status === 401, "HS256 signed with the public JWK as secret (alg confusion): 401", forged.body);
    const get = await call(es, request(await sign(claims(u)), null, "GET"));
    ok(get.status === 405, "GET: 405", get.status);
  }

  // ---- the server side: read-only, retries, a role without grants ----------
  {
    const u = randomUUID();
    const ro = connect(FUNCTION_ROLE, { connection: { default_transaction_read_only: "on" } });
    const r = await call(createHandler({ sql: ro, jwt: { hs256Secret: SECRET }, generate: model().generate, log: () => {} }),
      request(hs256(claims(u)), { job_id: "job-ro" }));
    ok(r.status === 503 && r.body.code === "25006" && r.body.error === "read_only" && r.headers.get("Retry-After") === "1",
      "a read-only database (a replica, a full disk): 503 read_only, Retry-After", r.body);
    await ro.end();

    const stranger = connect("edgefn_stranger");
    const logged: string[] = [];
    const r2 = await call(createHandler({ sql: stranger, jwt: { hs256Secret: SECRET }, generate: model().generate, log: (m) => logged.push(m) }),
      request(hs256(claims(u)), { job_id: "job-42501" }));
    ok(r2.status === 500 && r2.body.code === "42501" && r2.body.error === "misconfigured" && r2.body.message === "internal error" && logged.length === 1,
      "a database role without the grants: 500 misconfigured, message kept out of the body, logged", r2.body);
    await stranger.end();

    // A real 40001 from the server on the first attempt, then success (a
    // sequence counts the attempts: nextval survives the rollback).
    await su.query(`CREATE SEQUENCE public.edgefn_attempts;
                    CREATE FUNCTION public.edgefn_probe(code text) RETURNS int LANGUAGE plpgsql AS
                    $$ BEGIN RAISE EXCEPTION 'probe' USING ERRCODE = code; END $$;
                    GRANT USAGE ON SEQUENCE public.edgefn_attempts TO ${FUNCTION_ROLE}`);
    let attempts = 0;
    await credits.withRetry(async () => {
      attempts += 1;
      return await sql`SELECT CASE WHEN nextval('public.edgefn_attempts') = 1 THEN public.edgefn_probe('40001') END`;
    });
    ok(attempts === 2, "withRetry: a 40001 from the server is retried, the second attempt succeeds", attempts);
    attempts = 0;
    let last: unknown;
    try {
      await credits.withRetry(async () => { attempts += 1; return await sql`SELECT public.edgefn_probe('40P01')`; });
    } catch (e) { last = e; }
    const http = credits.httpError(last);
    ok(attempts === 4 && http.status === 503 && http.body.error === "deadlock" && http.body.retryable === true,
      "withRetry: a deadlock every time gives up after 4 attempts: 503 deadlock, retryable", { attempts, http });
    await su.query("DROP FUNCTION public.edgefn_probe(text); DROP SEQUENCE public.edgefn_attempts");
  }

  // ---- index.ts itself, under Deno: Deno.serve, npm:postgres, SUPABASE_DB_URL -------
  {
    const deno = join(HERE, "node_modules/.bin/deno");
    const fn = join(ROOT, "examples/supabase/functions/generate");
    const denoEnv = { ...process.env, DENO_DIR: join(HERE, "node_modules/.deno"), DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" };
    try {
      execFileSync(deno, ["check", "index.ts"], { cwd: fn, env: denoEnv, stdio: "pipe" });
      ok(true, "deno check index.ts (npm:postgres's own types)");
    } catch (e) {
      ok(false, "deno check index.ts (npm:postgres's own types)", String((e as { stderr?: Buffer }).stderr ?? e));
    }
    try {
      execFileSync(deno, ["lint"], { cwd: fn, env: denoEnv, stdio: "pipe" });
      ok(true, "deno lint of the function's four files");
    } catch (e) {
      ok(false, "deno lint of the function's four files", String((e as { stdout?: Buffer }).stdout ?? e));
    }

    // The model: fails when the input asks it to.
    const modelCalls: string[] = [];
    const modelServer: Server = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const job = JSON.parse(body);
        modelCalls.push(`${req.headers.authorization} ${job.id}`);
        res.writeHead(job.input?.fail ? 500 : 200, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ url: `https://cdn.example.com/${job.id}.png` }));
      });
    });
    await new Promise<void>((r) => modelServer.listen(0, "127.0.0.1", r));
    const free = await new Promise<number>((r) => {
      const probe = createServer().listen(0, "127.0.0.1", () => {
        const port = (probe.address() as AddressInfo).port;
        probe.close(() => r(port));
      });
    });
    const child = spawn(deno, ["run", "--allow-net", "--allow-env", "index.ts"], {
      cwd: fn,
      env: {
        ...denoEnv,
        SUPABASE_DB_URL: `postgres://${FUNCTION_ROLE}@127.0.0.1:${process.env.PGPORT}/${DATABASE}`,
        CREDITS_JWT_SECRET: SECRET,
        MODEL_URL: `http://127.0.0.1:${(modelServer.address() as AddressInfo).port}/v1/images`,
        MODEL_API_KEY: "model-key",
        DENO_SERVE_ADDRESS: `tcp:127.0.0.1:${free}`,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const listening = new Promise<boolean>((resolve) => {
      const seen = (d: Buffer) => { output += d; if (output.includes("Listening on")) resolve(true); };
      child.stdout.on("data", seen);
      child.stderr.on("data", seen);
      child.on("exit", () => resolve(false));
      setTimeout(() => resolve(false), 60000).unref();
    });
    ok(await listening, "deno run index.ts serves (Deno.serve)", output);
    const post = async (token: string, body: unknown) => {
      const res = await fetch(`http://127.0.0.1:${free}/`, {
        method: "POST", headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    };
    const u = randomUUID();
    const done = await post(hs256(claims(u)), { job_id: "deno-ok", input: { prompt: "a cat" } });
    ok(done.status === 200 && done.body.receipt?.amount === -1 && done.body.receipt?.balance === 5 &&
       done.body.output?.url?.endsWith("deno-ok.png") && modelCalls.includes("Bearer model-key deno-ok"),
      "Deno: 200, charged 1 of the 6-credit signup bonus, the model called with its key", { done, modelCalls });
    const failedJob = await post(hs256(claims(u)), { job_id: "deno-fail", input: { fail: true } });
    ok(failedJob.status === 502 && failedJob.body.restored === true && (await balance(u)) === 5,
      "Deno: the model fails, 502, the hold released, balance restored", failedJob);
    const poor = await post(hs256(claims(u)), { job_id: "deno-poor", operation: "video_second", units: 2 });
    ok(poor.status === 402 && poor.body.detail?.needed === 10 && poor.body.detail?.balance === 5, "Deno: out of credits, 402", poor);
    const forged = await post(hs256(claims(u), "not-the-secret-not-the-secret-not-the-secret"), { job_id: "deno-forged" });
    ok(forged.status === 401, "Deno: a token signed with another secret, 401", forged);
    child.kill("SIGTERM");
    await new Promise((r) => modelServer.close(r));
  }

  // ---- the example type-checks (tsc --strict, as Deno checks it) ------------
  try {
    execFileSync(join(HERE, "node_modules/.bin/tsc"), ["-p", join(HERE, "tsconfig.json")], { stdio: "pipe" });
    ok(true, "handler.ts, credits.ts and jwt.ts type-check with tsc --strict");
  } catch (e) {
    ok(false, "handler.ts, credits.ts and jwt.ts type-check with tsc --strict", String((e as { stdout?: Buffer }).stdout ?? e));
  }

  // ---- the README's Reference and Errors agree with the code ----------------
  {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    const section = (title: string) => {
      const start = readme.indexOf(`\n## ${title}\n`);
      return start < 0 ? "" : readme.slice(start, readme.indexOf("\n## ", start + 1));
    };
    const ref = section("Reference");
    const documented = new Map<string, string>();
    for (const line of ref.split("\n")) {
      if (line.startsWith("| `")) {
        const [first, who] = line.slice(2).split(" | ");
        for (const m of first.matchAll(/`([a-z_]+)\(/g)) documented.set(m[1], who);
      } else if (line.startsWith("**Setup functions**")) {
        const para = ref.slice(ref.indexOf(line)).split("\n\n")[0];
        const [owner, triggers] = para.split("The trigger functions");
        for (const m of owner.matchAll(/`([a-z_]+)\(/g)) documented.set(m[1], "owner");
        for (const m of (triggers ?? "").matchAll(/`([a-z_]+)`/g)) documented.set(m[1], "trigger");
      }
    }
    const catalog = await q(`SELECT DISTINCT p.proname AS name,
                                    CASE WHEN p.prorettype = 'trigger'::regtype THEN 'trigger'
                                         WHEN has_function_privilege('edgefn_client', p.oid, 'EXECUTE')
                                          AND has_function_privilege('edgefn_admin', p.oid, 'EXECUTE') THEN 'client, admin'
                                         WHEN has_function_privilege('edgefn_client', p.oid, 'EXECUTE') THEN 'client'
                                         WHEN has_function_privilege('edgefn_admin', p.oid, 'EXECUTE') THEN 'admin'
                                         ELSE 'owner' END AS who
                               FROM pg_proc p WHERE p.pronamespace = 'credits'::regnamespace ORDER BY 1`);
    const wrong = catalog.filter((f) => documented.get(f.name) !== f.who)
      .map((f) => `${f.name}: catalog ${f.who}, README ${documented.get(f.name) ?? "missing"}`);
    const extra = [...documented.keys()].filter((n) => !catalog.some((f) => f.name === n));
    ok(catalog.length > 50 && wrong.length === 0 && extra.length === 0,
      `README Reference: the ${catalog.length} functions of schema credits, each with who may call it`, { wrong, extra });

    const major = Number((await q("SHOW server_version_num"))[0].server_version_num) / 10000 | 0;
    const errcodes = readFileSync(join(
      execFileSync(`/usr/lib/postgresql/${major}/bin/pg_config`, ["--includedir-server"]).toString().trim(),
      "utils/errcodes.h"), "utf8");
    const sqlstateOf = (name: string): string => {
      const own = readFileSync(join(ROOT, "src/credits.h"), "utf8").match(new RegExp(`#define ${name}\\s+(\\S+)`));
      if (own && own[1].startsWith("ERRCODE_")) return sqlstateOf(own[1]);
      const text = own?.[1] ?? errcodes.match(new RegExp(`#define ${name} (MAKE_SQLSTATE\\([^)]*\\))`))?.[1] ?? "";
      return [...text.matchAll(/'(.)'/g)].map((m) => m[1]).join("") || `? ${name}`;
    };
    const raised = new Set<string>();
    for (const f of readdirSync(join(ROOT, "src")).filter((n) => n.endsWith(".c"))) {
      for (const m of readFileSync(join(ROOT, "src", f), "utf8").matchAll(/errcode\((ERRCODE_[A-Z0-9_]+)\)/g)) raised.add(sqlstateOf(m[1]));
    }
    for (const f of readdirSync(ROOT).filter((n) => /^credits--.*\.sql$/.test(n))) {
      for (const m of readFileSync(join(ROOT, f), "utf8").matchAll(/ERRCODE\s*=\s*'([^']+)'/g)) {
        raised.add(/^[0-9A-Z]{5}$/.test(m[1]) ? m[1] : sqlstateOf(`ERRCODE_${m[1].toUpperCase()}`));
      }
    }
    // Internal links (the Contents line among them) point at headings (GitHub's anchors).
    const prose = readme.replace(/```[\s\S]*?```/g, "");
    const anchors = new Set([...prose.matchAll(/^#{1,6} (.+)$/gm)]
      .map((m) => m[1].trim().toLowerCase().replace(/[^\w\- ]/g, "").replace(/ /g, "-")));
    const dead = [...new Set([...prose.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]))].filter((a) => !anchors.has(a));
    ok(anchors.has("reference") && anchors.has("errors") && dead.length === 0, "README: every #link has its heading", dead);

    const errors = section("Errors");
    const missing = [...raised].filter((c) => !errors.includes(`\`${c}\``));
    ok(raised.size >= 20 && missing.length === 0,
      `README Errors: every SQLSTATE raised in src/*.c and the SQL scripts (${[...raised].sort().join(" ")})`, missing);
  }

  const drift = await q("SELECT * FROM credits.reconcile()");
  ok(drift.length === 0, "reconcile() finds nothing", drift);

  await sql.end();
  await su.end();
  console.log(`1..${planned}`);
  if (failed > 0) process.exitCode = 1;
}

main().catch((err) => {
  console.log(`not ok ${planned + 1} - the test died: ${String(err?.stack ?? err).split("\n").join("\n# ")}`);
  console.log(`1..${planned + 1}`);
  process.exitCode = 1;
});
