// Verifies a Supabase Auth access token locally, with Web Crypto only (Deno
// and Node 20 both have it), so that no request leaves the function:
//   - HS256, signed with the project's JWT secret (the legacy, shared-secret
//     signing; set it as a function secret, e.g. CREDITS_JWT_SECRET);
//   - ES256 / RS256, signed with the project's asymmetric signing keys,
//     checked against the public keys in SUPABASE_JWKS (a default secret of
//     Edge Functions; the same set as https://<ref>.supabase.co/auth/v1/jwks).
// It accepts a token only for a signed-in user: role `authenticated`,
// audience `authenticated`, not expired, `sub` a uuid.  (The other way,
// `supabase.auth.getUser(token)`, asks the Auth server on every request.)

export interface Claims {
  sub: string;
  role: string;
  exp: number;
  is_anonymous?: boolean;
  [claim: string]: unknown;
}

export interface VerifyOptions {
  hs256Secret?: string; // the project's JWT secret
  jwks?: { keys: JsonWebKey[] }; // SUPABASE_JWKS, parsed
  now?: number; // seconds since the epoch (tests)
  leewaySeconds?: number; // clock skew allowed on exp / nbf (default 30)
}

export class JwtError extends Error {
  constructor(readonly reason: string) {
    super(`invalid JWT: ${reason}`);
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function base64url(s: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9_-]*$/.test(s)) throw new JwtError("malformed");
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4);
  let bin: string;
  try {
    bin = atob(b64);
  } catch {
    throw new JwtError("malformed");
  }
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function json(bytes: Uint8Array): Record<string, unknown> {
  try {
    const v = JSON.parse(new TextDecoder().decode(bytes));
    if (v && typeof v === "object" && !Array.isArray(v)) return v;
  } catch {
    // fall through
  }
  throw new JwtError("malformed");
}

type KeyJwk = JsonWebKey & { kid?: string };

async function verifyKey(alg: string, kid: unknown, opts: VerifyOptions): Promise<[CryptoKey, AlgorithmIdentifier | EcdsaParams]> {
  if (alg === "HS256") {
    if (!opts.hs256Secret) throw new JwtError("no secret for HS256");
    const raw = new TextEncoder().encode(opts.hs256Secret);
    return [await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["verify"]), "HMAC"];
  }
  const jwk = (opts.jwks?.keys as KeyJwk[] | undefined)?.find((k) => k.kid === kid && k.alg === alg);
  if (!jwk) throw new JwtError("unknown signing key");
  if (alg === "ES256") {
    const key = await crypto.subtle.importKey("jwk", jwk, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
    return [key, { name: "ECDSA", hash: "SHA-256" }];
  }
  if (alg === "RS256") {
    const key = await crypto.subtle.importKey("jwk", jwk, { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, false, ["verify"]);
    return [key, "RSASSA-PKCS1-v1_5"];
  }
  throw new JwtError(`algorithm ${alg} not accepted`);
}

/** The claims of a valid user token; throws JwtError (-> HTTP 401) otherwise. */
export async function verifyJwt(token: string, opts: VerifyOptions): Promise<Claims> {
  const parts = token.split(".");
  if (parts.length !== 3) throw new JwtError("malformed");
  const header = json(base64url(parts[0]));
  const payload = json(base64url(parts[1]));
  const [key, algorithm] = await verifyKey(String(header.alg), header.kid, opts);
  const signed = new TextEncoder().encode(`${parts[0]}.${parts[1]}`);
  if (!(await crypto.subtle.verify(algorithm, key, base64url(parts[2]), signed))) throw new JwtError("bad signature");

  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const leeway = opts.leewaySeconds ?? 30;
  if (typeof payload.exp !== "number" || payload.exp + leeway <= now) throw new JwtError("expired");
  if (typeof payload.nbf === "number" && payload.nbf - leeway > now) throw new JwtError("not yet valid");
  const aud = payload.aud;
  if (!(aud === "authenticated" || (Array.isArray(aud) && aud.includes("authenticated")))) throw new JwtError("wrong audience");
  if (payload.role !== "authenticated") throw new JwtError("not a signed-in user");
  if (typeof payload.sub !== "string" || !UUID.test(payload.sub)) throw new JwtError("sub is not a user id");
  return payload as Claims;
}
