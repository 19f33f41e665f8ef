# credits: PGXS build.  `make demo` and `make test` set everything up on a
# fresh Debian machine (see test/scripts/run.sh); plain `make` / `make install`
# are the usual PGXS targets.

MODULE_big = credits
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
PGFILEDESC = "credits - usage credits ledger"

EXTENSION = credits
# credits--1.0.sql is the script released as 1.0 (git tag v1.0): it never
# changes.  Every later schema change is an upgrade script credits--A--B.sql;
# CREATE EXTENSION of the default version runs 1.0 and then each step, so a
# fresh install and an ALTER EXTENSION UPDATE run the same statements.
DATA = credits--1.0.sql $(sort $(wildcard credits--*--*.sql))

REGRESS = $(basename $(notdir $(sort $(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --load-extension=credits
ISOLATION = $(basename $(notdir $(sort $(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test --outputdir=test/output_iso --load-extension=credits

# -Wextra minus two warnings: the V1 calling convention leaves fcinfo unused in
# some functions, and static CachedStatement initializers leave the plan
# pointer implicit (NULL until first use).
PG_CPPFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers
EXTRA_CLEAN = test/output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
else
all:
	@echo "pg_config not found: run 'make demo' or 'make test' to install the build dependencies" >&2; exit 1
endif

.PHONY: demo test bench
demo:
	@bash test/scripts/run.sh demo
test:
	@bash test/scripts/run.sh test
bench:
	@bash test/scripts/run.sh bench

$(OBJS): src/credits.h
src/purchases.o src/revenuecat.o: src/purchases.h
src/webhooks.o src/webhook_payload.o src/webhook_signatures.o src/webhook_stripe.o src/webhook_creem.o: src/purchases.h src/webhooks.h
src/external_ids.o src/identity.o src/revenuecat.o src/webhook_payload.o src/credits.o: src/external_ids.h
