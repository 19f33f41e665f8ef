// Supabase Edge Function `generate`: charges credits for a generation job and
// gives them back when the generation fails.  Copy this directory to
// supabase/functions/generate/ and deploy with `supabase functions deploy generate`.
//
// Secrets: SUPABASE_DB_URL and SUPABASE_JWKS are set by Supabase; set
// CREDITS_JWT_SECRET (the project's JWT secret) when the project still signs
// tokens with the legacy shared secret:  supabase secrets set CREDITS_JWT_SECRET=...
// handler.ts and credits.ts hold all the logic (tested under Node by make test).
import postgres from "npm:postgres@3.4.9";
import { createHandler } from "./handler.ts";

// One small pool per isolate; prepare: false for the transaction pooler (port 6543).
const sql = postgres(Deno.env.get("SUPABASE_DB_URL")!, { max: 3, prepare: false });
const jwks = Deno.env.get("SUPABASE_JWKS");

// Replace with the call to your model.  `units` is what the job really used
// (at most what was reserved); leave it out to charge everything reserved.
const MODEL_URL = Deno.env.get("MODEL_URL") ?? "https://api.example.com/v1/images";

async function generate(job: { jobId: string; operation: string; units: unknown; input: unknown }) {
  const res = await fetch(MODEL_URL, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${Deno.env.get("MODEL_API_KEY")}` },
    body: JSON.stringify({ id: job.jobId, input: job.input, n: job.units }),
  });
  if (!res.ok) throw new Error(`model answered ${res.status}`);
  return { output: await res.json() };
}

Deno.serve(createHandler({
  sql,
  jwt: { hs256Secret: Deno.env.get("CREDITS_JWT_SECRET"), jwks: jwks ? JSON.parse(jwks) : undefined },
  generate,
}));
