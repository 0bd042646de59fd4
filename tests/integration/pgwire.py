"""A tiny PostgreSQL wire-protocol client for tests that need raw bytes.

It builds startup packets (good and bad), reads backend messages with a
timeout, authenticates (cleartext, md5, SCRAM-SHA-256) and runs simple
queries, so that tests can look at exact SQLSTATEs, authentication requests
and BackendKeyData that a driver hides.
"""

import base64
import functools
import hashlib
import hmac
import os
import socket
import struct
import time

PROTOCOL_3_0 = 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


class PgError(Exception):
    """An ErrorResponse; .fields maps field codes ('C', 'M', 'S', ...) to text."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('C')}: {fields.get('M')}")

    @property
    def sqlstate(self):
        return self.fields.get("C")

    @property
    def message(self):
        return self.fields.get("M", "")


class ConnectionClosed(Exception):
    """The peer closed the socket."""


# ---------------------------------------------------------------- builders

def protocol_code(major, minor):
    return (major << 16) | minor


def startup_packet(params, protocol=PROTOCOL_3_0):
    """A StartupMessage: int32 length, int32 protocol, name\\0value\\0 ... \\0."""
    body = b""
    for key, value in params.items():
        body += key.encode() + b"\0" + str(value).encode() + b"\0"
    body += b"\0"
    return struct.pack("!ii", 8 + len(body), protocol) + body


def raw_packet(code, body=b""):
    """Length word, 32-bit code and an arbitrary body."""
    return struct.pack("!ii", 8 + len(body), code) + body


def ssl_request():
    return struct.pack("!ii", 8, SSL_REQUEST_CODE)


def gssenc_request():
    return struct.pack("!ii", 8, GSSENC_REQUEST_CODE)


def cancel_request(pid, key):
    return struct.pack("!iiii", 16, CANCEL_REQUEST_CODE, pid, key)


def message(mtype, body=b""):
    """A regular (typed) frontend message."""
    return mtype + struct.pack("!i", 4 + len(body)) + body


def query_message(sql):
    return message(b"Q", sql.encode() + b"\0")


def terminate_message():
    return message(b"X")


# The extended protocol, one message at a time (names are str, kinds b"S" or b"P").

def parse(name, sql, types=()):
    return message(b"P", name.encode() + b"\0" + sql.encode() + b"\0" +
                   struct.pack(f"!h{len(types)}i", len(types), *types))


def bind(stmt, params=(), portal=""):
    body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!hh", 0, len(params))
    for p in params:
        body += struct.pack("!i", len(p)) + p.encode()
    return message(b"B", body + struct.pack("!h", 0))


def describe(kind, name):
    return message(b"D", kind + name.encode() + b"\0")


def execute(portal=""):
    return message(b"E", portal.encode() + b"\0" + struct.pack("!i", 0))


def close(kind, name):
    return message(b"C", kind + name.encode() + b"\0")


SYNC = message(b"S")


def data_row(body):
    """A DataRow's values: str, or None for NULL."""
    (n,) = struct.unpack("!h", body[:2])
    pos, row = 2, []
    for _ in range(n):
        (ln,) = struct.unpack("!i", body[pos:pos + 4])
        pos += 4
        row.append(None if ln < 0 else body[pos:pos + ln].decode())
        pos += max(ln, 0)
    return row


def parse_fields(body):
    """ErrorResponse / NoticeResponse body -> {code: text}."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def parse_cstrings(body):
    return [p.decode() for p in body.split(b"\0")[:-1]]


def md5_password_hash(user, password, salt):
    """The md5 response: 'md5' + md5(md5(password + user) + salt)."""
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


def md5_secret(user, password):
    """A userlist.txt md5 secret."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def scram_secret(password, salt=None, iterations=4096):
    """A userlist.txt / pg_authid SCRAM-SHA-256 secret."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# ---------------------------------------------------------------- the client

class Wire:
    """A raw socket speaking the PostgreSQL protocol, every read bounded."""

    def __init__(self, host, port, timeout=10.0):
        self.timeout = timeout
        if host.startswith("/"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(os.path.join(host, f".s.PGSQL.{port}"))
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.params = {}
        self.backend_key = None
        self.auth_requests = []
        self.notices = []

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out waiting for the server")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ConnectionClosed(f"connection closed with {len(self.buf)} bytes pending")
            self.buf += chunk

    def read_byte(self, timeout=None):
        """One untyped byte (the answer to SSLRequest / GSSENCRequest)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self._fill(1, deadline)
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def read_message(self, timeout=None):
        """(type: bytes, body: bytes) of the next backend message."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self._fill(5, deadline)
        mtype = self.buf[:1]
        (length,) = struct.unpack("!i", self.buf[1:5])
        if length < 4 or length > 1 << 30:
            raise ValueError(f"bad message length {length} for type {mtype!r}")
        self._fill(1 + length, deadline)
        body = self.buf[5:1 + length]
        self.buf = self.buf[1 + length:]
        return mtype, body

    def read_until(self, mtype, timeout=None):
        """Every (type, body) up to and including the first message of type mtype."""
        seen = []
        while True:
            got, body = self.read_message(timeout=timeout)
            seen.append((got, body))
            if got == mtype:
                return seen

    def read_until_closed(self, timeout=None):
        """All messages up to EOF; a timeout here means the peer kept the socket open."""
        out = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                out.append(self.read_message(timeout=max(0.01, deadline - time.monotonic())))
            except ConnectionClosed:
                return out

    def is_closed(self, timeout=None):
        """True when the peer closes the socket within the timeout."""
        try:
            self.read_until_closed(timeout)
            return True
        except socket.timeout:
            return False

    # -------------------------------------------------------- login

    def startup(self, params, protocol=PROTOCOL_3_0):
        self.send(startup_packet(params, protocol))

    def login(self, user, database, password=None, params=None, protocol=PROTOCOL_3_0,
              send_startup=True):
        """Send a StartupMessage (unless already sent), answer authentication,
        and read up to ReadyForQuery. Raises PgError on an ErrorResponse.
        Returns the list of every message type seen (for protocol tests)."""
        if send_startup:
            p = {"user": user, "database": database}
            p.update(params or {})
            self.startup(p, protocol)
        seen = []
        scram = None
        while True:
            mtype, body = self.read_message()
            seen.append((mtype, body))
            if mtype == b"E":
                raise PgError(parse_fields(body))
            if mtype == b"R":
                (code,) = struct.unpack("!i", body[:4])
                self.auth_requests.append(code)
                if code == AUTH_OK:
                    continue
                if password is None:
                    raise AssertionError(f"server asked for authentication {code} but no password given")
                if code == AUTH_CLEARTEXT:
                    self.send(message(b"p", password.encode() + b"\0"))
                elif code == AUTH_MD5:
                    self.send(message(b"p", md5_password_hash(user, password, body[4:8]).encode() + b"\0"))
                elif code == AUTH_SASL:
                    mechs = parse_cstrings(body[4:])
                    assert "SCRAM-SHA-256" in mechs, mechs
                    scram = ScramClient(password)
                    first = scram.client_first()
                    self.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
                elif code == AUTH_SASL_CONTINUE:
                    self.send(message(b"p", scram.client_final(body[4:])))
                elif code == AUTH_SASL_FINAL:
                    scram.verify_server_final(body[4:])
                else:
                    raise AssertionError(f"unsupported authentication request {code}")
            elif mtype == b"S":
                name, value = parse_cstrings(body)[:2]
                self.params[name] = value
            elif mtype == b"K":
                self.backend_key = struct.unpack("!ii", body[:8])
            elif mtype == b"N":
                self.notices.append(parse_fields(body))
            elif mtype == b"Z":
                return seen
            # 'v' (NegotiateProtocolVersion) and anything else: keep reading

    # -------------------------------------------------------- queries

    def query(self, sql):
        """Simple query; returns the rows (lists of str/None) of the last result.
        Raises PgError after draining to ReadyForQuery, or at the close that
        follows a FATAL error."""
        self.send(query_message(sql))
        rows, error = [], None
        while True:
            try:
                mtype, body = self.read_message()
            except ConnectionClosed:
                if error:
                    raise error from None
                raise
            if mtype == b"T":
                rows = []
            elif mtype == b"D":
                rows.append(data_row(body))
            elif mtype == b"E":
                error = PgError(parse_fields(body))
            elif mtype == b"Z":
                if error:
                    raise error
                return rows

    def scalar(self, sql):
        return self.query(sql)[0][0]

    def terminate(self):
        try:
            self.send(terminate_message())
        except OSError:
            pass
        self.close()


@functools.lru_cache(maxsize=64)
def _salted_password(password, salt, iterations):
    """PBKDF2 of a password: the costly step, the same for every login with one secret."""
    return hashlib.pbkdf2_hmac("sha256", password, salt, iterations)


class ScramClient:
    """The client side of SCRAM-SHA-256 (RFC 5802 / 7677), no channel binding.
    bench/run uses it too, for its thousands of idle logins."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def client_first(self):
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(self.nonce), "server nonce does not extend ours"
        salt = base64.b64decode(attrs["s"])
        salted = _salted_password(self.password, salt, int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.expected_server_signature = hmac.new(server_key, auth_message, "sha256").digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, data):
        attrs = dict(kv.split("=", 1) for kv in data.decode().split(","))
        assert base64.b64decode(attrs["v"]) == self.expected_server_signature, "bad server signature"


def replies(w, syncs=1, timeout=20):
    """Reads up to the syncs-th ReadyForQuery, or the close. Returns the replies as
    short words: the message type, 'D=a|b' for a row, 'E:sqlstate' for an error,
    'Z:status' for ReadyForQuery, '<closed>' for a close (notices and
    ParameterStatus left out)."""
    out = []
    while syncs:
        try:
            t, body = w.read_message(timeout=timeout)
        except ConnectionClosed:
            out.append("<closed>")
            break
        t = t.decode()
        if t == "D":
            out.append("D=" + "|".join("NULL" if v is None else v for v in data_row(body)))
        elif t == "E":
            out.append("E:" + parse_fields(body)["C"])
        elif t == "Z":
            out.append("Z:" + body.decode())
            syncs -= 1
        elif t not in ("N", "S"):
            out.append(t)
    return " ".join(out)


def exchange(w, data, syncs=1, timeout=10):
    """Sends data, then replies(w, syncs)."""
    w.send(data)
    return replies(w, syncs, timeout)


def first_error(w, user, database, params=None, sql="SELECT 1"):
    """Log in on w and run sql: the first PgError, at login or at the query
    (wherever the refusal surfaces), or None. Closes w."""
    try:
        w.login(user, database, params=params)
        w.query(sql)
    except PgError as exc:
        return exc
    finally:
        w.close()
    return None
