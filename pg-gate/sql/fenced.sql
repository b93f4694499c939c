-- fenced.sql: the fencing check inside PostgreSQL (CONTRACT S5), for services in any
-- language. Install it once per database (it is idempotent; run it in one transaction):
--
--     psql --single-transaction -f fenced.sql "$DATABASE_URL"
--
-- Then start every transaction that writes data guarded by a lock with the holder's
-- fencing token:
--
--     BEGIN;
--     SELECT fenced_check('orders', 34);      -- raises if a newer holder has been here
--     UPDATE orders SET status = 'paid' WHERE id = 1;
--     COMMIT;
--
-- What it guarantees. fenced_marks keeps, per resource, the highest token seen (the
-- mark). fenced_check raises the mark to the presented token, leaves it if it already
-- equals the token (a holder's later writes with one token write no new row version), or
-- raises an error if the token is below it. It locks the resource's mark row until the
-- transaction ends, whether or not it raised the mark, so the check and everything the
-- transaction writes after it commit together or not at all: a newer holder's fenced_check waits for this
-- transaction, and once a newer holder has committed, an older one's check fails and
-- its writes never happen. This holds only for writes that come after a fenced_check of
-- the same resource in the same transaction: the database cannot fence a write that does
-- not ask (fenced_guard below makes a table ask on every INSERT and UPDATE).
--
-- Errors.
--   ZF001  stale fencing token: the presented token is below the resource's mark.
--          MESSAGE names the resource and both tokens; DETAIL is a JSON object
--          {"resource": text, "presented": bigint, "current": bigint} for programs.
--          The transaction is aborted: roll it back; nothing it wrote lands. Do not retry
--          with the same token: a newer holder owns the resource (acquire the lock again).
--          Why ZF001: the SQL standard reserves the classes that start with 0-4 or A-H
--          and leaves those that start with 5-9 or I-Z to implementations and
--          applications; PostgreSQL's own classes in that range are 53 to 58, 72, P0
--          and XX, so class ZF ("fenced") is ours alone and a client can match it exactly.
--   22023  invalid_parameter_value: the token is NULL or not positive, or the resource is
--          NULL (fencing tokens start at 1).
--
-- Isolation levels. Under READ COMMITTED (PostgreSQL's default) a check that waited for
-- a newer holder's transaction sees its committed mark and raises ZF001. Under REPEATABLE
-- READ and SERIALIZABLE the same race shows up as SQLSTATE 40001 (could not serialize):
-- retry the whole transaction, whose fenced_check then raises ZF001. In no isolation
-- level does a stale write land.
--
-- Durability. A fenced_check counts once its transaction commits; with PostgreSQL's
-- defaults (fsync = on, synchronous_commit = on) a commit the client saw survives a crash.
-- A session with synchronous_commit = off may lose its last commits, marks included, in a
-- crash of the server: keep it on for guarded transactions.

-- Serialises concurrent installs (CREATE OR REPLACE FUNCTION is not safe to race); it
-- holds only inside a transaction, hence --single-transaction above.
SELECT pg_advisory_xact_lock(hashtext('fenced.sql'));

-- One row per resource: the highest fencing token it has accepted or been fenced with.
CREATE TABLE IF NOT EXISTS fenced_marks (
    resource text PRIMARY KEY,
    token bigint NOT NULL CHECK (token > 0)
);

-- Checks `token` against `resource`'s mark and raises the mark to it if it is below;
-- returns the mark (the token). Raises ZF001 if the token is below the mark (see the top
-- of this file).
CREATE OR REPLACE FUNCTION fenced_check(resource text, token bigint) RETURNS bigint
LANGUAGE plpgsql
AS $fenced_check$
#variable_conflict use_column
DECLARE
    accepted bigint;
    current_mark bigint;
BEGIN
    IF fenced_check.resource IS NULL THEN
        RAISE EXCEPTION 'fenced_check: the resource is NULL'
            USING ERRCODE = '22023';
    END IF;
    IF fenced_check.token IS NULL OR fenced_check.token <= 0 THEN
        RAISE EXCEPTION 'fenced_check: fencing token % for resource % is not positive: tokens start at 1',
            coalesce(fenced_check.token::text, 'NULL'), quote_literal(fenced_check.resource)
            USING ERRCODE = '22023';
    END IF;
    -- A holder's second and later writes with one token find the mark equal to it: a
    -- locking read answers them without the upsert. FOR NO KEY UPDATE is the upsert's
    -- lock strength; under READ COMMITTED it waits for a transaction holding the row and
    -- reads the newest mark, under REPEATABLE READ a mark changed since the snapshot fails
    -- it with 40001. Any other mark (none, below, above) goes on to the upsert.
    SELECT m.token INTO current_mark FROM fenced_marks AS m
        WHERE m.resource = fenced_check.resource
        FOR NO KEY UPDATE;
    IF current_mark = fenced_check.token THEN
        RETURN current_mark;
    END IF;
    -- The conflicting row is locked even when the WHERE is false (see PostgreSQL's INSERT
    -- documentation, ON CONFLICT DO UPDATE): an equal token, which writes no new row
    -- version, and a refused one hold the lock too, until the transaction ends. Under
    -- READ COMMITTED an upsert that waited for a newer holder's transaction evaluates the
    -- WHERE against the mark that holder committed.
    INSERT INTO fenced_marks AS m (resource, token)
        VALUES (fenced_check.resource, fenced_check.token)
        ON CONFLICT (resource) DO UPDATE
            SET token = EXCLUDED.token
            WHERE m.token < EXCLUDED.token
        RETURNING m.token INTO accepted;
    IF accepted IS NULL THEN
        -- The row is locked by this transaction, and this statement's snapshot is newer
        -- than the upsert's wait (READ COMMITTED takes one per statement; REPEATABLE READ
        -- failed the upsert with 40001 if the newest mark is not in its snapshot): this
        -- reads the newest mark.
        SELECT m.token INTO current_mark FROM fenced_marks AS m
            WHERE m.resource = fenced_check.resource;
        IF current_mark = fenced_check.token THEN
            RETURN current_mark;
        END IF;
        RAISE EXCEPTION 'stale fencing token: presented %, current % (resource %)',
            fenced_check.token, current_mark, quote_literal(fenced_check.resource)
            USING ERRCODE = 'ZF001',
                  DETAIL = json_build_object('resource', fenced_check.resource,
                                             'presented', fenced_check.token,
                                             'current', current_mark)::text,
                  HINT = 'A newer holder has written or fenced this resource: roll back.';
    END IF;
    RETURN accepted;
END;
$fenced_check$;

COMMENT ON FUNCTION fenced_check(text, bigint) IS
    'fenced: checks a fencing token against the resource''s mark and raises the mark; '
    'SQLSTATE ZF001 if the token is stale. Call it first in the transaction.';

-- The trigger behind fenced_guard: fenced_check on every inserted or updated row, with
-- the resource and the token read from the columns named by the trigger's arguments.
CREATE OR REPLACE FUNCTION fenced_guard_row() RETURNS trigger
LANGUAGE plpgsql
AS $fenced_guard_row$
DECLARE
    row_json jsonb := to_jsonb(NEW);
BEGIN
    PERFORM fenced_check(row_json ->> TG_ARGV[0], (row_json ->> TG_ARGV[1])::bigint);
    RETURN NEW;
END;
$fenced_guard_row$;

-- Guards `target`: every INSERT and UPDATE of a row runs fenced_check(row's
-- resource_column, row's token_column) first, so a writer with a stale token cannot
-- change the table even if it forgets to call fenced_check. DELETE is not covered (a
-- deleted row carries no writer's token): call fenced_check before deleting. The guard
-- checks the token the row is written with, so every writer must set token_column on
-- every INSERT and UPDATE (an UPDATE that leaves it alone is checked with the old row's
-- token).
-- Calling it again replaces the guard.
CREATE OR REPLACE FUNCTION fenced_guard(target regclass, resource_column text, token_column text)
RETURNS void
LANGUAGE plpgsql
AS $fenced_guard$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS fenced_guard ON %s', target);
    EXECUTE format(
        'CREATE TRIGGER fenced_guard BEFORE INSERT OR UPDATE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION fenced_guard_row(%L, %L)',
        target, resource_column, token_column);
END;
$fenced_guard$;
