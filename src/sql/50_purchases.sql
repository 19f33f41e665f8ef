/* ---- Purchases: packs, entitlements, RevenueCat webhooks, instant unlock (src/purchases.c, src/revenuecat.c) ---- */

CREATE FUNCTION credits.apply_purchase(
    user_id uuid,
    product_id text,
    transaction_id text,
    source text,
    purchased_at timestamptz,
    expires_at timestamptz DEFAULT NULL)
RETURNS credits.receipt
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_apply_purchase';

COMMENT ON FUNCTION credits.apply_purchase(uuid, text, text, text, timestamptz, timestamptz) IS
'Applies a verified store transaction once per (source, transaction_id): a pack becomes a lot (a purchase entry), a subscription an entitlement (receipt kind ''entitlement'', entry_id NULL).';

CREATE FUNCTION credits.apply_revenuecat_event(payload jsonb)
RETURNS jsonb
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_apply_revenuecat_event';

COMMENT ON FUNCTION credits.apply_revenuecat_event(jsonb) IS
'Applies a RevenueCat webhook body exactly once, in any order; returns {"status": "applied" | "duplicate" | "ignored", "reason": ..., ...}. Malformed payloads: 22023 with the field.';

CREATE FUNCTION credits.claim_pending_purchase(product_id text, transaction_id text)
RETURNS jsonb
LANGUAGE c VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'credits_claim_pending_purchase';

COMMENT ON FUNCTION credits.claim_pending_purchase(text, text) IS
'Client: unlocks the product''s plan for the calling user for credits.pending_purchase_grace until the store confirms the transaction (packs wait for the store).';

/*
 * A user sees their own entitlements (plan, status, expiry), never another's
 * (grant_roles grants SELECT on every table with a SELECT policy); the
 * product catalog is public, like plans and operations.  Purchases and store
 * events stay with the admin.
 */
CREATE POLICY own_rows ON credits.entitlements FOR SELECT
    USING (user_id = (SELECT credits.current_user_id_or_null()));
CREATE POLICY readable ON credits.products FOR SELECT USING (true);
