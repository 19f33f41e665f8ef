// Better Auth (its Postgres adapter on a pg Pool) against the test cluster of
// `make test` (PGHOST, PGPORT, PGUSER): signing up gives the signup bonus once,
// and retried or concurrent hooks give nothing more.  Prints TAP.
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import pg from "pg";
import { giveSignupBonus, userUuid } from "./signup_bonus.ts";

const DATABASE = "credits_betterauth";
let planned = 0;
let failed = 0;
const lines: string[] = [];

function ok(pass: boolean, name: string, got?: unknown): void {
  planned += 1;
  lines.push(`${pass ? "ok" : "not ok"} ${planned} - ${name}`);
  if (!pass) {
    failed += 1;
    lines.push(`# got: ${JSON.stringify(got)}`);
  }
}

async function main(): Promise<void> {
  const admin = new pg.Client({ database: process.env.PGDATABASE ?? "postgres" });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${DATABASE}`);
  await admin.query(`CREATE DATABASE ${DATABASE}`);
  await admin.end();

  const pool = new pg.Pool({ database: DATABASE, max: 10 });
  await pool.query("CREATE EXTENSION credits");
  const hookRuns: string[] = [];

  const auth = betterAuth({
    database: pool,
    secret: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    baseURL: "http://localhost:3000",
    emailAndPassword: { enabled: true },
    telemetry: { enabled: false },
    databaseHooks: {
      user: {
        create: {
          after: async (user) => {
            hookRuns.push(user.id);
            await giveSignupBonus(pool, user.id);
          },
        },
      },
    },
  });
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();

  const q = async (sql: string, params: unknown[] = []) => (await pool.query(sql, params)).rows;
  const bonus = Number((await q("SELECT signup_bonus FROM credits.plans WHERE name = 'free'"))[0].signup_bonus);
  const grants = async (id: string) =>
    Number((await q("SELECT count(*) AS n FROM credits.ledger WHERE user_id = credits.user_uuid($1) AND kind = 'grant'", [id]))[0].n);
  const balance = async (id: string) => Number((await q("SELECT credits.balance(credits.user_uuid($1)) AS b", [id]))[0].b);

  // Sign up through Better Auth's own API.
  const signup = await auth.api.signUpEmail({
    body: { email: "ada@example.com", password: "correct horse battery staple", name: "Ada" },
  });
  const id = signup.user.id;
  ok(typeof id === "string" && !/^[0-9a-f-]{36}$/i.test(id), "Better Auth gives a user id that is not a uuid", id);
  ok(hookRuns.length === 1 && hookRuns[0] === id, "the user-creation hook ran once", hookRuns);
  ok(bonus > 0 && (await balance(id)) === bonus, `the new account holds the signup bonus (${bonus})`, await balance(id));
  ok((await grants(id)) === 1, "one grant entry in the ledger", await grants(id));
  ok(userUuid(id) === (await q("SELECT credits.user_uuid($1)::text AS u", [id]))[0].u,
    "the account id computed in TypeScript equals credits.user_uuid()", userUuid(id));

  // The hook retried (a redelivered job, a retried request): nothing more.
  const retries = [await giveSignupBonus(pool, id), await giveSignupBonus(pool, id), await giveSignupBonus(pool, id)];
  ok(retries.every((created) => created === false), "a retried hook says the account existed", retries);
  ok((await balance(id)) === bonus && (await grants(id)) === 1, "a retried hook grants nothing", await balance(id));

  // The same email again: Better Auth refuses, the hook does not run.
  let refused = false;
  try {
    await auth.api.signUpEmail({ body: { email: "ada@example.com", password: "another password 123", name: "Ada" } });
  } catch {
    refused = true;
  }
  ok(refused && hookRuns.length === 1, "signing up twice with one email runs no second hook", hookRuns.length);

  // Two servers racing on one new user: exactly one call creates the account.
  const other = await auth.api.signUpEmail({
    body: { email: "grace@example.com", password: "correct horse battery staple", name: "Grace" },
  });
  const racing = await Promise.all(Array.from({ length: 8 }, () => giveSignupBonus(pool, other.user.id)));
  ok(racing.filter((created) => created).length === 0, "hooks racing after signup find the account made once", racing);
  ok((await balance(other.user.id)) === bonus && (await grants(other.user.id)) === 1,
    "the second user got the bonus once", await grants(other.user.id));
  const fresh = "better-auth-id-never-signed-up";
  const raced = await Promise.all(Array.from({ length: 8 }, () => giveSignupBonus(pool, fresh)));
  ok(raced.filter((created) => created).length === 1, "of 8 concurrent first calls exactly one creates the account", raced);
  ok((await grants(fresh)) === 1 && (await balance(fresh)) === bonus, "and the bonus is granted once", await grants(fresh));

  ok((await q("SELECT * FROM credits.reconcile()")).length === 0, "credits.reconcile() finds nothing to fix");
  await pool.end();
}

main()
  .catch((err) => {
    planned += 1;
    failed += 1;
    lines.push(`not ok ${planned} - the example ran to the end`);
    lines.push(`# ${String(err?.stack ?? err).replace(/\n/g, "\n# ")}`);
  })
  .finally(() => {
    console.log(`1..${planned}`);
    for (const line of lines) console.log(line);
    process.exitCode = failed === 0 ? 0 : 1;
  });
