'use strict';
/*
 * node-postgres named queries through pgbun in transaction mode, for
 * tests/integration/test_drivers.py.
 *
 *   node named_queries.js HOST PORT USER PASSWORD DATABASE CLIENTS SECONDS TAG
 *
 * Opens CLIENTS pg.Client connections and runs them all at once for SECONDS:
 * named queries ({name, text, values}: node-postgres sends Parse under that
 * name once per connection, then only Bind/Execute), several in flight per
 * client, and BEGIN ... COMMIT transactions of named inserts that check the
 * client's own rows. Every client gives the same names to different texts
 * (client k calls text j "q<(j + k) % 4>"), so a name that reached the
 * wrong statement would show. Rows go to drv_rows with tag TAG-<k>.
 *
 * Prints one JSON object on stdout:
 *   {"clients": N, "queries": N, "transactions": N, "moved_clients": N,
 *    "backends": [pid, ...], "errors": ["...", ...]}
 * and exits 0 only when no query failed or returned a wrong result.
 */
const { Client } = require('pg');

const NAMES = 4;

function check(what, got, want) {
    if (JSON.stringify(got) !== JSON.stringify(want)) {
        throw new Error(`${what}: got ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    }
}

async function runClient(client, k, deadline, tag, totals) {
    // Text j of the client's statements is named q<(j + k) % NAMES>.
    const name = (j) => `q${(j + k) % NAMES}`;
    const pids = new Set();
    let i = 0;
    let rows = 0;
    let sum = 0;

    while (Date.now() < deadline) {
        i += 1;
        // Three named queries in flight at once (node-postgres queues them on the connection).
        const [doubled, joined, pid] = await Promise.all([
            client.query({ name: name(0), text: 'SELECT $1::int * 2 AS v', values: [i] }),
            client.query({ name: name(1), text: 'SELECT $1::text || $2::text AS v', values: [tag, String(i)] }),
            client.query({ name: name(2), text: 'SELECT pg_backend_pid() AS pid' }),
        ]);
        check('doubled', doubled.rows, [{ v: 2 * i }]);
        check('joined', joined.rows, [{ v: tag + String(i) }]);
        pids.add(pid.rows[0].pid);
        totals.queries += 3;

        if (i % 3 === 0) {
            await client.query('BEGIN');
            try {
                const insert = { name: name(3), text: 'INSERT INTO drv_rows (tag, n) VALUES ($1, $2)' };
                await client.query({ ...insert, values: [tag, i] });
                await client.query({ ...insert, values: [tag, -1] });
                const own = await client.query({
                    name: 'own_rows',
                    text: 'SELECT count(*)::int AS c, coalesce(sum(n), 0)::int AS s FROM drv_rows WHERE tag = $1',
                    values: [tag],
                });
                rows += 2;
                sum += i - 1;
                check('own rows', own.rows, [{ c: rows, s: sum }]);
                await client.query('COMMIT');
            } catch (err) {
                await client.query('ROLLBACK').catch(() => {});
                throw err;
            }
            totals.queries += 3;
            totals.transactions += 1;
        }
    }
    return pids;
}

async function main() {
    const [host, port, user, password, database, nclients, seconds, tag] = process.argv.slice(2);

    if (!tag) {
        process.stderr.write('usage: node named_queries.js HOST PORT USER PASSWORD DATABASE CLIENTS SECONDS TAG\n');
        process.exit(2);
    }
    const totals = { queries: 0, transactions: 0 };
    const errors = [];
    const clients = [];

    for (let k = 0; k < Number(nclients); k++) {
        clients.push(new Client({ host, port: Number(port), user, password, database,
                                  connectionTimeoutMillis: 10000, query_timeout: 30000 }));
    }
    await Promise.all(clients.map((c) => c.connect()));
    const deadline = Date.now() + Number(seconds) * 1000;
    const results = await Promise.allSettled(clients.map((c, k) => runClient(c, k, deadline, `${tag}-${k}`, totals)));
    await Promise.allSettled(clients.map((c) => c.end()));

    const backends = new Set();
    let moved = 0;
    results.forEach((r, k) => {
        if (r.status === 'rejected') {
            errors.push(`client ${k}: ${(r.reason && r.reason.message) || r.reason}`);
            return;
        }
        r.value.forEach((pid) => backends.add(pid));
        if (r.value.size > 1) moved += 1;
    });
    process.stdout.write(JSON.stringify({ clients: clients.length, ...totals, moved_clients: moved,
                                          backends: [...backends], errors }) + '\n');
    process.exit(errors.length === 0 ? 0 : 1);
}

main().catch((err) => {
    process.stderr.write(String((err && err.stack) || err) + '\n');
    process.exit(1);
});
