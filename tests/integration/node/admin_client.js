'use strict';
/*
 * Runs admin console commands through node-postgres (`pg` from npm) and
 * prints one JSON object on stdout, for tests/integration/test_admin.py.
 *
 *   node admin_client.js HOST PORT USER DATABASE COMMAND [COMMAND...]
 *
 * Each command runs twice: first over the extended protocol (Parse, Bind,
 * Describe, Execute, Sync: `values: []` alone would not force it in pg 8,
 * so queryMode 'extended' is set too), then over the simple protocol:
 *
 *   {"extended": {"SHOW POOLS": {"fields": [{"name": ..., "type": <oid>}],
 *                                "rows": [[...], ...], "command": "SHOW"}},
 *    "simple":   {...}}
 *
 * A failed command gives {"error": {"code": SQLSTATE, "message": ...}}.
 * int8 and numeric values are parsed into JSON numbers by type OID, so a
 * column the server declares as text stays a string.
 */
const { Client, types } = require('pg');

types.setTypeParser(20, (v) => Number(v)); // int8
types.setTypeParser(1700, (v) => Number(v)); // numeric

async function runAll(client, commands) {
    const out = { extended: {}, simple: {} };

    for (const mode of ['extended', 'simple']) {
        for (const text of commands) {
            const query = mode === 'extended' ? { text, values: [], queryMode: 'extended', rowMode: 'array' }
                                              : { text, rowMode: 'array' };
            try {
                const res = await client.query(query);
                out[mode][text] = {
                    fields: res.fields.map((f) => ({ name: f.name, type: f.dataTypeID })),
                    rows: res.rows,
                    command: res.command,
                };
            } catch (err) {
                out[mode][text] = { error: { code: err.code || null, message: err.message } };
            }
        }
    }
    return out;
}

async function main() {
    const [host, port, user, database, ...commands] = process.argv.slice(2);

    if (!host || !port || !user || !database || commands.length === 0) {
        process.stderr.write('usage: node admin_client.js HOST PORT USER DATABASE COMMAND [COMMAND...]\n');
        process.exit(2);
    }
    const client = new Client({ host, port: Number(port), user, database, connectionTimeoutMillis: 10000 });

    await client.connect();
    try {
        process.stdout.write(JSON.stringify(await runAll(client, commands)) + '\n');
    } finally {
        await client.end();
    }
}

main().catch((err) => {
    process.stderr.write(String((err && err.stack) || err) + '\n');
    process.exit(1);
});
