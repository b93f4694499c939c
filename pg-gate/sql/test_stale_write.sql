-- A stale write from plain SQL, as any service would send it (run by psql in
-- tests/tests/gate_postgres.rs, after fenced.sql is installed; checks: S5).
-- The new holder (token 34) writes; the old holder (token 33), waking up from a pause,
-- then tries to write in a transaction that starts with fenced_check. ON_ERROR_STOP makes
-- psql stop at the error and exit with status 3; the test checks the SQLSTATE and reads
-- the table back.
\set VERBOSITY verbose

CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, written_by bigint NOT NULL);

BEGIN;
SELECT fenced_check('orders', 34);
INSERT INTO orders VALUES (1, 'paid', 34);
COMMIT;

BEGIN;
SELECT fenced_check('orders', 33);
UPDATE orders SET status = 'refunded', written_by = 33 WHERE id = 1;
COMMIT;
