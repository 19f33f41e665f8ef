// The signup hook an app on Better Auth copies: the new user's account gets the
// plan's signup bonus through the credits extension, exactly once however often
// the hook runs (a retried request, a retried job, two servers racing).
import { createHash } from "node:crypto";
import type { Pool } from "pg";

// Better Auth ids are not uuids: credits.user_uuid() maps them (UUIDv5 in the
// namespace credits documents), so any language can compute the account id.
export const CREDITS_USER_NAMESPACE = "c4bd227c-fefc-5f48-9877-ac7685490c37";

const UUID_TEXT = /^(\{[0-9a-f]{4}(-?[0-9a-f]{4}){7}\}|[0-9a-f]{4}(-?[0-9a-f]{4}){7})$/i;

// The same id credits.user_uuid(externalId) gives, computed in the app.
export function userUuid(externalId: string): string {
  let hex: string;
  if (UUID_TEXT.test(externalId)) {
    hex = externalId.replace(/[{}-]/g, "").toLowerCase();
  } else {
    const digest = createHash("sha1")
      .update(Buffer.from(CREDITS_USER_NAMESPACE.replace(/-/g, ""), "hex"))
      .update(externalId, "utf8")
      .digest();
    digest[6] = (digest[6] & 0x0f) | 0x50; // version 5
    digest[8] = (digest[8] & 0x3f) | 0x80; // RFC 9562 variant
    hex = digest.subarray(0, 16).toString("hex");
  }
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// databaseHooks.user.create.after: true when this call created the account.
export async function giveSignupBonus(db: Pool, betterAuthUserId: string): Promise<boolean> {
  const { rows } = await db.query<{ created: boolean }>(
    "SELECT credits.open_account(credits.user_uuid($1)) AS created",
    [betterAuthUserId],
  );
  return rows[0].created;
}
