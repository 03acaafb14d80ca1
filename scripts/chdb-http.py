#!/usr/bin/env python3
"""ClickHouse's HTTP interface, the part Vigil's ClickHouse store uses, served
by chDB: the engine of a current ClickHouse release, in process.

Debian ships ClickHouse 18.16, and no newer server package is reachable from
the project's machines; chDB (PyPI: chdb-core) is. Serving the store's
requests with it checks that the store's SQL (DDL, materialized views,
queries, retention's ALTERs) and its formats (Native and RowBinary inserts,
RowBinary results) work on a current release too. Only the HTTP framing is
this script's: what it passes to the engine is what the store sent.

    python3 scripts/chdb-http.py PORT DATA_DIR

Requests, as the store makes them (one per connection):
- POST /?user=… with a statement in the body: run, the result in the
  statement's own FORMAT (RowBinary) or, for statements without one, empty.
- POST /?query=INSERT INTO t [(cols)] FORMAT Native|RowBinary&user=… with
  the rows as the body: the rows are written to a file and inserted from
  it with the file() table function (chDB takes no insert data inline).
Errors come back as status 500 with ClickHouse's message, as the server does.
One request runs at a time (a chDB session is not shared between threads).
"""

import os
import re
import sys
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chdb import session as chs

INSERT = re.compile(
    r"^\s*INSERT\s+INTO\s+([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)\s*(?:\(([^)]*)\))?\s*FORMAT\s+(\w+)\s*$",
    re.IGNORECASE,
)
FORMAT = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)


class Engine:
    def __init__(self, path):
        self.session = chs.Session(path)
        self.lock = threading.Lock()
        self.tmp = tempfile.mkdtemp(prefix="chdb-http-")

    def run(self, sql):
        fmt = "RowBinary"
        m = FORMAT.search(sql)
        if m:
            fmt = m.group(1)
            sql = sql[: m.start()]
        with self.lock:
            res = self.session.query(sql, fmt)
        return bytes(res.bytes()) if res is not None else b""

    def insert(self, statement, body):
        m = INSERT.match(statement)
        if not m:
            raise ValueError(f"not an insert this server understands: {statement!r}")
        db, table, cols, fmt = m.groups()
        path = os.path.join(self.tmp, f"rows.{threading.get_ident()}")
        with open(path, "wb") as f:
            f.write(body)
        quoted = path.replace("'", "\\'")
        if fmt.lower() == "native":
            # Native blocks name their columns and types themselves.
            source = f"file('{quoted}', 'Native')"
            target = f"{db}.{table}" + (f" ({cols})" if cols else "")
        else:
            names = [c.strip() for c in cols.split(",")] if cols else None
            with self.lock:
                rows = self.session.query(
                    f"SELECT name, type FROM system.columns WHERE database = '{db}' "
                    f"AND table = '{table}' ORDER BY position",
                    "TabSeparated",
                ).bytes()
            types = dict(line.split("\t", 1) for line in rows.decode().splitlines())
            names = names or list(types)
            structure = ", ".join(f"{n} {types[n]}" for n in names)
            source = f"file('{quoted}', '{fmt}', '{structure}')"
            target = f"{db}.{table} ({', '.join(names)})"
        try:
            with self.lock:
                self.session.query(f"INSERT INTO {target} SELECT * FROM {source}")
        finally:
            os.unlink(path)
        return b""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    engine = None

    def do_POST(self):
        params = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            if "query" in params:
                out = self.engine.insert(params["query"][0], body)
            else:
                out = self.engine.run(body.decode())
            status = 200
        except Exception as e:  # the engine's errors, to the client as the server sends them
            out = f"Code: 0. DB::Exception: {e}\n".encode()
            status = 500
        self.send_response(status)
        self.send_header("Content-Length", str(len(out)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: chdb-http.py PORT DATA_DIR")
    Handler.engine = Engine(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print(f"chdb-http: listening on 127.0.0.1:{sys.argv[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
