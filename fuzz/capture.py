#!/usr/bin/python3
"""Rebuilds the seed corpora under fuzz/corpus from real traffic.

    /usr/bin/python3 fuzz/capture.py        (as root or as a user; needs PostgreSQL's binaries)

It starts a throwaway PostgreSQL the way the integration tests do
(tests/integration/conftest.py), puts a recording TCP proxy in front of it and
runs real clients through the proxy: psql, pgbench in its three protocols,
psycopg (pipelines, COPY, server-side cursors, errors mid-pipeline, a cancel).
Each recorded connection becomes
  - fuzz/corpus/startup: the first packet the client sent (StartupMessage,
    SSLRequest, CancelRequest);
  - fuzz/corpus/conn: the conversation in fuzz/conn.c's input format, once
    with pgbun's own login on both sides (flags 0, 1, 2: transaction,
    session, statement) and once raw as the client and server sent it;
  - fuzz/corpus/scan: the text of every Query and Parse the client sent;
  - fuzz/corpus/scram: the SASL messages of a SCRAM login, both sides.
Files are named by the hash of their content, so a rerun adds what changed.
"""
import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP / "tests" / "integration"))
os.environ.setdefault("PGBUN_SRCDIR", str(TOP))

import conftest  # noqa: E402  (the integration tests' PostgreSQL fixture)
import psycopg  # noqa: E402

CORPUS = TOP / "fuzz" / "corpus"
CNONCE = b"rOprNGfwEbeRWgbNEkqO"  # fuzz/scram.c's fixed client nonce


class Recorder:
    """A TCP proxy that keeps every connection's chunks: (from_client, bytes)."""

    def __init__(self, port):
        self.port = port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.addr = self.sock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.port))
            chunks = []
            with self.lock:
                self.conns.append(chunks)
            for src, dst, flag in ((c, s, True), (s, c, False)):
                threading.Thread(target=self.pipe, args=(src, dst, flag, chunks), daemon=True).start()

    def pipe(self, src, dst, from_client, chunks):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self.lock:
                chunks.append((from_client, data))
            try:
                dst.sendall(data)
            except OSError:
                return


def messages(stream, startup):
    """Splits a byte stream into messages; with startup, the first is a startup-family packet."""
    out, at = [], 0
    if startup and len(stream) >= 8:
        n = struct.unpack("!I", stream[:4])[0]
        out.append((None, stream[:n]))
        at = n
        if struct.unpack("!I", stream[4:8])[0] == 80877103 and len(stream) > at:  # SSLRequest, then the real one
            n = struct.unpack("!I", stream[at:at + 4])[0]
            out.append((None, stream[at:at + n]))
            at += n
    while at + 5 <= len(stream):
        n = struct.unpack("!I", stream[at + 1:at + 5])[0]
        out.append((stream[at:at + 1], stream[at:at + 1 + n]))
        at += 1 + n
    return out


def login_length(chunks):
    """How many bytes of each side are the login: up to the server's first ReadyForQuery."""
    client = b"".join(d for c, d in chunks if c)
    server = b"".join(d for c, d in chunks if not c)
    cmsgs = messages(client, True)
    clen = sum(len(m) for t, m in cmsgs if t is None or t == b"p")
    slen = 0
    for t, m in messages(server, False):
        slen += len(m)
        if t == b"Z":
            return clen, slen
    return clen, slen


def ops(chunks, skip_client, skip_server):
    """fuzz/conn.c ops for the chunks, the first bytes of each side skipped."""
    out = bytearray()
    for from_client, data in chunks:
        if from_client:
            cut = min(skip_client, len(data))
            skip_client -= cut
        else:
            cut = min(skip_server, len(data))
            skip_server -= cut
        data = data[cut:]
        for i in range(0, len(data), 255):
            piece = data[i:i + 255]
            out += bytes([0 if from_client else 1, len(piece)]) + piece
    return bytes(out)


def save(kind, data):
    d = CORPUS / kind
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def keep(chunks):
    client = b"".join(d for c, d in chunks if c)
    if len(client) < 8:
        return
    first = client[:struct.unpack("!I", client[:4])[0]]
    save("startup", first)
    raw = ops(chunks, 0, 0)
    save("conn", bytes([4 | 8]) + raw[:60000])
    code = struct.unpack("!I", client[4:8])[0]
    if code != 3 << 16:
        return
    clen, slen = login_length(chunks)
    body = ops(chunks, clen, slen)[:60000]
    for db in (0, 1, 2):
        save("conn", bytes([db]) + body)
    for t, m in messages(client, True):
        if t in (b"Q", b"P") and len(m) > 6:
            text = m[5:-1] if t == b"Q" else m[5:].split(b"\0", 2)[1]
            save("scan", text)
    server = b"".join(d for c, d in chunks if not c)
    sasl_client = [m[5:] for t, m in messages(client, True) if t == b"p"]
    sasl_server = [m[9:] for t, m in messages(server, False)
                   if t == b"R" and struct.unpack("!I", m[5:9])[0] in (11, 12)]
    if len(sasl_client) == 2 and len(sasl_server) == 2:
        # SASLInitialResponse: mechanism, int32 length, client-first-message.
        mech_end = sasl_client[0].index(b"\0")
        first = sasl_client[0][mech_end + 5:]
        save("scram", b"\x00" + first + b"\0" + sasl_client[1])
        # The server's messages, its nonce made to start with the harness's client nonce.
        sfirst = sasl_server[0]
        r = sfirst.index(b"r=") + 2
        nonce_end = sfirst.index(b",", r)
        server_part = sfirst[r:nonce_end][24:]  # libpq's client nonce is 24 characters
        sfirst = sfirst[:r] + CNONCE + server_part + sfirst[nonce_end:]
        save("scram", b"\x01" + sfirst + b"\0" + sasl_server[1])


def main():
    pg = conftest.Postgres("capture").init()
    try:
        rec = Recorder(pg.port)
        env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(rec.addr), PGUSER="postgres",
                   PGDATABASE="postgres", PGSSLMODE="disable", PGCONNECT_TIMEOUT="10")
        subprocess.run(["pgbench", "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", str(pg.port),
                        "-U", "postgres", "postgres"], check=True, capture_output=True, timeout=120)

        def psql(*args, stdin=None):
            subprocess.run(["psql", "-X", "-q", *args], env=env, input=stdin, capture_output=True,
                           timeout=60)

        psql("-c", "SELECT 1")
        psql("-c", "SELECT * FROM pgbench_branches; SELECT now(), 'x'::text, NULL")
        psql("-c", "BEGIN; SET LOCAL work_mem = '8MB'; SET search_path = public; COMMIT")
        psql("-c", "SET statement_timeout = '5s'; RESET ALL; DISCARD ALL")
        psql("-c", "SELECT 1/0")
        psql("-c", "BEGIN; SELECT 1/0; SELECT 1; ROLLBACK")
        psql("-c", "LISTEN ch; NOTIFY ch, 'hi'; UNLISTEN *")
        psql("-c", "PREPARE q(int) AS SELECT $1; EXECUTE q(1); DEALLOCATE q")
        psql("-c", "CREATE TEMP TABLE t(a int); INSERT INTO t VALUES (1), (2); SELECT * FROM t")
        psql("-c", "SELECT pg_advisory_lock(1); SELECT pg_advisory_unlock_all()")
        psql("-c", "DO $$ BEGIN RAISE NOTICE 'n %', 1; END $$")
        psql("-c", "CREATE TEMP TABLE c(a int, b text)", "-c", "COPY c FROM STDIN", "-c",
             "COPY c TO STDOUT", stdin=b"1\tone\n2\ttwo\n\\.\n")
        psql("-c", "COPY (SELECT generate_series(1, 50)) TO STDOUT")
        psql("-c", "SELECT repeat('x', 20000)")
        for mode in ("simple", "extended", "prepared"):
            subprocess.run(["pgbench", "-n", "-S", "-t", "3", "-M", mode], env=env,
                           capture_output=True, timeout=60)
        subprocess.run(["pgbench", "-n", "-t", "2", "-M", "prepared"], env=env, capture_output=True,
                       timeout=60)

        conninfo = f"host=127.0.0.1 port={rec.addr} user=postgres dbname=postgres sslmode=disable"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("SELECT %s::int, %s::text", (1, "a"))
            conn.execute("SELECT %s", (2,), prepare=True)
            conn.execute("SELECT %s", (3,), prepare=True)
            try:
                with conn.pipeline():
                    conn.execute("SELECT 1")
                    conn.execute("SELECT 1/0")
                    conn.execute("SELECT 2")
            except psycopg.Error:
                pass
            try:
                with conn.pipeline():
                    conn.execute("SELECT 1/0")
            except psycopg.Error:
                pass
            with conn.transaction():
                with conn.cursor(name="sc") as cur:
                    cur.execute("SELECT generate_series(1, 100)")
                    cur.fetchmany(10)
            with conn.cursor() as cur:
                cur.executemany("SELECT %s", [(i,) for i in range(3)])
                with cur.copy("COPY (SELECT 1, 'x') TO STDOUT") as copy:
                    for _ in copy:
                        pass
        with psycopg.connect(conninfo) as conn:
            def cancel_later():
                time.sleep(0.5)
                conn.cancel()
            threading.Thread(target=cancel_later).start()
            try:
                conn.execute("SELECT pg_sleep(5)")
            except psycopg.Error:
                pass
        # A SCRAM login (conftest's roles).
        for role, (password, encryption) in conftest.ROLES.items():
            if encryption == "scram-sha-256":
                subprocess.run(["psql", "-X", "-c", "SELECT 1"], env=dict(env, PGUSER=role, PGPASSWORD=password),
                               capture_output=True, timeout=30)
                break
        time.sleep(1)
        with rec.lock:
            conns = [list(c) for c in rec.conns]
        for chunks in conns:
            keep(chunks)
        print(f"capture: {len(conns)} connections recorded")
    finally:
        pg.destroy()


if __name__ == "__main__":
    main()
