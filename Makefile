# credits: PGXS build.  `make demo` and `make test` set everything up on a
# fresh Debian machine (see test/scripts/run.sh); plain `make` / `make install`
# are the usual PGXS targets.

MODULE_big = credits
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
PGFILEDESC = "credits - usage credits ledger"

EXTENSION = credits credits_router
# credits--1.0.sql is the script released as 1.0 (git tag v1.0): it never
# changes.  Every later schema change is an upgrade script credits--A--B.sql;
# CREATE EXTENSION of the default version runs 1.0 and then each step, so a
# fresh install and an ALTER EXTENSION UPDATE run the same statements.
DATA = credits--1.0.sql $(sort $(wildcard credits--*--*.sql)) credits_router--1.0.sql
# credits_router (credits_router.control): the same API on a PL/Proxy router
# database in front of credits shards; it reuses two C functions of the
# credits library (the JWT readers).

REGRESS = $(basename $(notdir $(sort $(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --load-extension=credits
ISOLATION = $(basename $(notdir $(sort $(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test --outputdir=test/output_iso --load-extension=credits

# -Wextra minus two warnings: the V1 calling convention leaves fcinfo unused in
# some functions, and static CachedStatement initializers leave the plan
# pointer implicit (NULL until first use).  No -Werror here: a packager's
# compiler may warn about something new, and that must not fail the build.
# The harness (make test / demo / bench, CI) builds with PG_CFLAGS=-Werror
# on every PostgreSQL major it tests.
PG_CPPFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
	-DCREDITS_VERSION='"$(EXTVERSION)"'
# The schema version this library runs on: the control file's default_version (src/version.c).
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" credits.control)
EXTRA_CLEAN = test/output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
else
all:
	@echo "pg_config not found: run 'make demo' or 'make test' to install the build dependencies" >&2; exit 1
endif

# PG=17 or PG=18 runs the harness inside a Debian root filesystem that ships
# that major (built once per machine, needs root); the default is the host's 15.
PG ?= 15
.PHONY: demo test bench
demo:
	@bash test/scripts/run.sh demo $(PG)
test:
	@bash test/scripts/run.sh test $(PG)
bench:
	@bash test/scripts/run.sh bench $(PG)

$(OBJS): src/credits.h src/compat.h
src/purchases.o src/revenuecat.o src/shard_transfer.o: src/purchases.h
src/webhooks.o src/webhook_payload.o src/webhook_signatures.o src/webhook_stripe.o src/webhook_creem.o: src/purchases.h src/webhooks.h
src/external_ids.o src/identity.o src/revenuecat.o src/webhook_payload.o src/credits.o: src/external_ids.h
