/*
 * external_ids.h
 *		User ids from other identity systems (Better Auth, Clerk, Firebase,
 *		Auth0, RevenueCat aliases) as the uuids credits keys accounts by.
 */
#ifndef CREDITS_EXTERNAL_IDS_H
#define CREDITS_EXTERNAL_IDS_H

#include "postgres.h"

#include "utils/uuid.h"

/* credits.external_user_ids: a JWT sub that is not a uuid maps through user_uuid() */
extern bool credits_external_user_ids;

extern void external_ids_init(void);
extern void external_id_uuid(const char *external_id, pg_uuid_t *out);
extern void user_uuid_from_text(const char *external_id, const char *field, pg_uuid_t *out);

#endif							/* CREDITS_EXTERNAL_IDS_H */
