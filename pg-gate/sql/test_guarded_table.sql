-- fenced_guard from plain SQL (run by psql in tests/tests/gate_postgres.rs, after
-- fenced.sql is installed; checks: S5). The table carries each row's resource and writer's
-- token; the guard runs fenced_check on every INSERT and UPDATE, so the old holder's
-- UPDATE is refused although it never calls fenced_check itself. ON_ERROR_STOP makes psql
-- stop at that error (exit status 3); the test reads the table back.
\set VERBOSITY verbose

CREATE TABLE accounts (
    id int PRIMARY KEY,
    resource text NOT NULL,
    balance int NOT NULL,
    token bigint NOT NULL
);
SELECT fenced_guard('accounts', 'resource', 'token');
SELECT fenced_guard('accounts', 'resource', 'token'); -- replaces the guard: idempotent

INSERT INTO accounts VALUES (1, 'accounts', 100, 34);

UPDATE accounts SET balance = 0, token = 33 WHERE id = 1;
