-- The sample database behind pgbun: run by the postgres image's entrypoint,
-- by scripts/quickstart and by the integration test fixture, as a superuser
-- connected to the "postgres" database (psql -f, it uses \gexec and \connect).
-- Safe to run again: it creates only what is missing.

SET client_min_messages = warning;
SET password_encryption = 'scram-sha-256';

SELECT 'CREATE ROLE pgbun_user LOGIN PASSWORD ''pgbun_pass'''
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgbun_user')
\gexec

SELECT 'CREATE DATABASE pgbun_test OWNER pgbun_user'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'pgbun_test')
\gexec

\connect pgbun_test

SET client_min_messages = warning;

CREATE TABLE IF NOT EXISTS users (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz DEFAULT now()
);
CREATE INDEX IF NOT EXISTS users_name_idx ON users (name);

CREATE TABLE IF NOT EXISTS txn_log (
    id          serial PRIMARY KEY,
    client_id   int,
    amount      numeric,
    note        text,
    created_at  timestamptz DEFAULT now()
);
CREATE INDEX IF NOT EXISTS txn_log_client_id_idx ON txn_log (client_id);
CREATE INDEX IF NOT EXISTS txn_log_created_at_idx ON txn_log (created_at);

INSERT INTO users (name)
SELECT v.name
FROM (VALUES ('alice'), ('bob'), ('carol'), ('dave'), ('erin'),
             ('frank'), ('grace'), ('heidi'), ('ivan'), ('judy')) AS v(name)
WHERE NOT EXISTS (SELECT 1 FROM users);

INSERT INTO txn_log (client_id, amount, note)
SELECT v.client_id, v.amount, v.note
FROM (VALUES (1, 100.00, 'opening deposit'),
             (2, 250.50, 'opening deposit'),
             (3, 75.25, 'opening deposit'),
             (1, -20.00, 'coffee'),
             (4, 1000.00, 'salary'),
             (5, -45.99, 'books'),
             (2, -100.00, 'rent share'),
             (6, 12.34, 'refund'),
             (7, -5.00, 'fee'),
             (8, 300.00, 'transfer in'))
     AS v(client_id, amount, note)
WHERE NOT EXISTS (SELECT 1 FROM txn_log);

ALTER TABLE users OWNER TO pgbun_user;
ALTER TABLE txn_log OWNER TO pgbun_user;
GRANT CONNECT, TEMPORARY ON DATABASE pgbun_test TO pgbun_user;
GRANT USAGE ON SCHEMA public TO pgbun_user;
GRANT SELECT, INSERT, UPDATE, DELETE ON users, txn_log TO pgbun_user;
GRANT USAGE, SELECT ON SEQUENCE users_id_seq, txn_log_id_seq TO pgbun_user;
