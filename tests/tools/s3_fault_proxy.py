#!/usr/bin/env python3
"""Fault-injecting reverse proxy for an S3-compatible server, for tests.

Put it between an S3 client and an S3 server (e.g. moto_server) to make a
seeded fraction of requests fail the way real object stores fail:

    python s3_fault_proxy.py --upstream http://127.0.0.1:9000 --port 0 \\
        --seed 7 --rate-get 0.2 --rate-list 0.2 --rate-upload 0.2 \\
        --faults 503,500,reset,stall --stall-seconds 5 \\
        --fail-always-key broken/ --require-access-key testing \\
        --port-file /tmp/proxy.port

On start it prints ``LISTENING http://HOST:PORT`` to stdout (and writes the
port to --port-file when given). Standard library only.

Request classes (path-style addressing: ``/bucket/key``):
  get     GET of an object (no list-type/uploads/uploadId/... sub-resource)
  list    GET of a bucket (``/bucket`` or ``/bucket/``) with listing parameters
  upload  PUT of an object (single put, UploadPart, copy),
          POST ``?uploads`` (create multipart), POST ``?uploadId=`` (complete)
  other   everything else (HEAD, DELETE, bucket creation, ...): never faulted

Faults (one drawn per faulted request, from --faults):
  503        503 SlowDown, S3 XML error body
  500        500 InternalError, S3 XML error body
  reset      get: upstream status, headers (full Content-Length) and part of
             the body, then a TCP RST; other classes: the request body is read,
             nothing is forwarded, the connection is reset without an answer
  stall      the request is read, nothing is answered for --stall-seconds,
             then the connection is closed
  stall-body get: headers and part of the body, then silence for
             --stall-seconds, then close; other classes: same as stall
Faulted upload and list requests never reach the upstream server.

Control endpoint (same port, never S3):
  GET  /__proxy__/stats   counts per class: requests and faults by kind
  GET  /__proxy__/config  current settings
  POST /__proxy__/config  JSON object, any of: rate (all classes), rates
                          {"get","list","upload"}, rate_get, rate_list,
                          rate_upload, faults (list or "a,b"), stall_seconds,
                          fail_always_keys (list, replaces), require_access_key
                          (string or null), seed (re-seeds), reset_stats (bool);
                          answers with the new settings
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import random
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from xml.sax.saxutils import escape as xml_escape

CONTROL_PREFIX = "/__proxy__/"
CLASSES = ("get", "list", "upload", "other")
FAULTABLE = ("get", "list", "upload")
FAULT_KINDS = ("503", "500", "reset", "stall", "stall-body")
DEFAULT_FAULTS = "503,500,reset,stall"
# Counted in the stats next to the random faults.
COUNTED_KINDS = FAULT_KINDS + ("fail_always", "denied")

IO_CHUNK = 64 * 1024
# Part of the body sent before a reset / stall-body: half, at most this much.
PARTIAL_BODY_MAX = 64 * 1024
# Pause between the partial body and the RST, so that the client has read the
# status line and headers and sees the failure while reading the body.
RESET_DELAY_S = 0.05

# Hop-by-hop request headers not forwarded. Transfer-Encoding, Content-Length
# and Trailer are kept: request bodies are forwarded byte for byte.
REQUEST_DROP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authorization",
    "te", "upgrade", "expect",
}
# Response headers replaced by this proxy's own framing.
RESPONSE_DROP = {
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
}

LIST_PARAMS = {
    "list-type", "prefix", "delimiter", "marker", "max-keys", "encoding-type",
    "continuation-token", "start-after", "fetch-owner", "x-id",
}
OBJECT_GET_PARAMS = {"versionId", "partNumber", "x-id"}
OBJECT_PUT_PARAMS = {"partNumber", "uploadId", "x-id"}

ERROR_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "InvalidAccessKeyId":
        "The AWS Access Key Id you provided does not exist in our records.",
    "AccessDenied": "Access Denied",
}

_log_lock = threading.Lock()


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    with _log_lock:
        sys.stderr.write(f"s3_fault_proxy {stamp} {message}\n")
        sys.stderr.flush()


class Abort(Exception):
    """The client connection is unusable; drop it."""


class UpstreamError(Exception):
    """The upstream server could not be reached or answered garbage."""


def _ignored_param(name: str) -> bool:
    # Query-string authentication (presigned URLs) and response overrides.
    lower = name.lower()
    return lower.startswith("x-amz-") or lower.startswith("response-")


def classify(method: str, path: str, query: str) -> tuple[str, str, str]:
    """(class, bucket, key) of a path-style S3 request."""
    raw_bucket, _, raw_key = path.lstrip("/").partition("/")
    bucket = urllib.parse.unquote(raw_bucket)
    key = urllib.parse.unquote(raw_key)
    params = {
        name
        for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)
        if not _ignored_param(name)
    }
    if not bucket:
        return "other", bucket, key
    if method == "GET":
        if not key:
            if "list-type" in params or params <= LIST_PARAMS:
                return "list", bucket, key
            return "other", bucket, key
        if params <= OBJECT_GET_PARAMS:
            return "get", bucket, key
        return "other", bucket, key
    if method == "PUT" and key and params <= OBJECT_PUT_PARAMS:
        return "upload", bucket, key
    if method == "POST" and key and ("uploads" in params or "uploadId" in params):
        return "upload", bucket, key
    return "other", bucket, key


_SIGV4_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_SIGV2_CREDENTIAL = re.compile(r"^AWS\s+([^:\s]+):")


def access_key_of(authorization: str | None, query: str) -> str | None:
    """The access key id a request claims, or None for an anonymous one."""
    if authorization:
        for pattern in (_SIGV4_CREDENTIAL, _SIGV2_CREDENTIAL):
            match = pattern.search(authorization)
            if match:
                return match.group(1)
        return None
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name == "X-Amz-Credential":
            return value.split("/", 1)[0]
        if name == "AWSAccessKeyId":
            return value
    return None


def parse_faults(value) -> list[str]:
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = [item.strip() for item in value]
    else:
        raise ValueError("faults: expected a list of strings or a comma-separated string")
    for item in items:
        if item not in FAULT_KINDS:
            raise ValueError(f"unknown fault {item!r} (known: {', '.join(FAULT_KINDS)})")
    return items


def parse_rate(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: must be between 0 and 1")
    return value


def _empty_class_stats() -> dict:
    return {"requests": 0, "faults": {kind: 0 for kind in COUNTED_KINDS}}


class State:
    """Settings and counters shared by all handler threads."""

    def __init__(self, *, upstream: str, rates: dict, faults: list, stall_seconds: float,
                 fail_always_keys: list, require_access_key: str | None, seed: int):
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.upstream = upstream
        self.rates = dict(rates)
        self.faults = list(faults)
        self.stall_seconds = float(stall_seconds)
        self.fail_always_keys = list(fail_always_keys)
        self.require_access_key = require_access_key
        self.seed = seed
        self.rng = random.Random(seed)
        self.started = time.time()
        self._reset_stats()

    def _reset_stats(self) -> None:
        self.classes = {name: _empty_class_stats() for name in CLASSES}
        self.upstream_errors = 0
        self.client_aborts = 0

    # --- decisions -----------------------------------------------------------
    def begin(self, cls: str, key: str, access_key: str | None) -> tuple[str | None, float]:
        """Count a request; return (fault or None, stall seconds)."""
        with self.lock:
            self.classes[cls]["requests"] += 1
            if self.require_access_key is not None and access_key != self.require_access_key:
                fault = "denied"
            elif cls == "get" and any(s in key for s in self.fail_always_keys):
                fault = "fail_always"
            else:
                fault = None
                rate = self.rates.get(cls, 0.0)
                if rate > 0.0 and self.faults and self.rng.random() < rate:
                    fault = self.rng.choice(self.faults)
            if fault is not None:
                self.classes[cls]["faults"][fault] += 1
            return fault, self.stall_seconds

    def count(self, field: str) -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + 1)

    # --- control endpoint ----------------------------------------------------
    def config_json(self) -> dict:
        with self.lock:
            return self._config_json_locked()

    def _config_json_locked(self) -> dict:
        return {
            "upstream": self.upstream,
            "rates": dict(self.rates),
            "faults": list(self.faults),
            "stall_seconds": self.stall_seconds,
            "fail_always_keys": list(self.fail_always_keys),
            "require_access_key": self.require_access_key,
            "seed": self.seed,
        }

    def stats_json(self) -> dict:
        with self.lock:
            classes = {}
            totals = _empty_class_stats()
            for name in CLASSES:
                entry = self.classes[name]
                faults = dict(entry["faults"])
                classes[name] = {
                    "requests": entry["requests"],
                    "faults": faults,
                    "faults_total": sum(faults.values()),
                }
                totals["requests"] += entry["requests"]
                for kind, n in faults.items():
                    totals["faults"][kind] += n
            totals["faults_total"] = sum(totals["faults"].values())
            return {
                "classes": classes,
                "totals": totals,
                "upstream_errors": self.upstream_errors,
                "client_aborts": self.client_aborts,
                "uptime_seconds": round(time.time() - self.started, 3),
                "config": self._config_json_locked(),
            }

    def update(self, body: dict) -> dict:
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        known = {"rate", "rates", "rate_get", "rate_list", "rate_upload", "faults",
                 "stall_seconds", "fail_always_keys", "require_access_key", "seed",
                 "reset_stats"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        # Validate everything first, then apply at once.
        rates = {}
        if "rate" in body:
            value = parse_rate("rate", body["rate"])
            rates = {name: value for name in FAULTABLE}
        if "rates" in body:
            if not isinstance(body["rates"], dict):
                raise ValueError("rates: expected an object")
            for name, value in body["rates"].items():
                if name not in FAULTABLE:
                    raise ValueError(f"rates: unknown class {name!r}")
                rates[name] = parse_rate(f"rates.{name}", value)
        for name in FAULTABLE:
            if f"rate_{name}" in body:
                rates[name] = parse_rate(f"rate_{name}", body[f"rate_{name}"])
        faults = parse_faults(body["faults"]) if "faults" in body else None
        stall = None
        if "stall_seconds" in body:
            stall = body["stall_seconds"]
            if isinstance(stall, bool) or not isinstance(stall, (int, float)) or stall < 0:
                raise ValueError("stall_seconds: expected a number >= 0")
        keys = None
        if "fail_always_keys" in body:
            keys = body["fail_always_keys"]
            if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
                raise ValueError("fail_always_keys: expected a list of non-empty strings")
        if "require_access_key" in body:
            access = body["require_access_key"]
            if access is not None and not isinstance(access, str):
                raise ValueError("require_access_key: expected a string or null")
        if "seed" in body and (isinstance(body["seed"], bool) or not isinstance(body["seed"], int)):
            raise ValueError("seed: expected an integer")
        with self.lock:
            self.rates.update(rates)
            if faults is not None:
                self.faults = faults
            if stall is not None:
                self.stall_seconds = float(stall)
            if keys is not None:
                self.fail_always_keys = list(keys)
            if "require_access_key" in body:
                self.require_access_key = body["require_access_key"]
            if "seed" in body:
                self.seed = body["seed"]
                self.rng = random.Random(self.seed)
            if body.get("reset_stats"):
                self._reset_stats()
            return self._config_json_locked()


class ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, state: State, upstream: urllib.parse.SplitResult,
                 upstream_timeout: float, verbose: bool):
        self.state = state
        self.upstream = upstream
        self.upstream_timeout = upstream_timeout
        self.verbose = verbose
        super().__init__(address, ProxyHandler)

    def server_bind(self):
        # Skip HTTPServer's reverse DNS lookup of the bind address.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, Abort)):
            return  # a client went away; nothing to report
        log(f"error: unexpected {type(exc).__name__}: {exc} (client {client_address[0]})")


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "s3-fault-proxy"
    sys_version = ""
    timeout = 300  # idle keep-alive client connections

    server: ProxyServer

    def setup(self):
        super().setup()
        self._upstream_conn = None
        self._upstream_used = False

    def finish(self):
        self._close_upstream()
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args):
        if self.server.verbose:
            log(f"{self.client_address[0]} {format % args}")

    def log_request(self, code="-", size="-"):
        pass  # logged by _handle when verbose

    # Every method goes through the same path.
    def do_GET(self):
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = do_PATCH = do_GET

    # --- main path ---------------------------------------------------------------
    def _handle(self):
        try:
            self._dispatch()
        except Abort:
            self.server.state.count("client_aborts")
            self.close_connection = True
        except OSError:
            # The client went away while we were reading or writing.
            self.server.state.count("client_aborts")
            self.close_connection = True

    def _dispatch(self):
        split = urllib.parse.urlsplit(self.path)
        path, query = split.path or "/", split.query
        if self.server.verbose:
            log(f"{self.command} {self.path}")
        try:
            body, chunked = self._read_body()
        except ValueError as exc:
            self._send_simple(400, "text/plain", f"bad request body: {exc}\n".encode())
            self.close_connection = True
            return
        if path.startswith(CONTROL_PREFIX):
            self._control(path, query, body)
            return

        state = self.server.state
        cls, _bucket, key = classify(self.command, path, query)
        access_key = access_key_of(self.headers.get("Authorization"), query)
        fault, stall_seconds = state.begin(cls, key, access_key)
        if fault is not None:
            log(f"fault={fault} class={cls} {self.command} {self.path}")

        if fault == "denied":
            if access_key is None:
                self._send_s3_error(403, "AccessDenied", path)
            else:
                extra = f"<AWSAccessKeyId>{xml_escape(access_key)}</AWSAccessKeyId>"
                self._send_s3_error(403, "InvalidAccessKeyId", path, extra)
            return
        if fault in ("503", "fail_always"):
            self._send_s3_error(503, "SlowDown", path)
            return
        if fault == "500":
            self._send_s3_error(500, "InternalError", path)
            return
        if fault in ("stall", "stall-body") and not (fault == "stall-body" and cls == "get"):
            self._sleep(stall_seconds)
            self.close_connection = True
            return
        if fault == "reset" and cls != "get":
            self._hard_reset()
            return

        try:
            resp = self._forward(body, chunked)
        except UpstreamError as exc:
            state.count("upstream_errors")
            log(f"upstream error: {exc} ({self.command} {self.path})")
            self._send_s3_error(502, "BadGateway", path, message=str(exc))
            return
        try:
            if fault == "reset":
                self._relay_partial(resp)
                time.sleep(RESET_DELAY_S)
                self._hard_reset()
            elif fault == "stall-body":
                self._relay_partial(resp)
                self._sleep(stall_seconds)
                self.close_connection = True
            else:
                self._relay(resp)
        finally:
            self._finish_upstream(resp)

    # --- request body --------------------------------------------------------------
    def _read_body(self) -> tuple[bytes, bool]:
        """The raw request body (chunked framing kept) and whether it is chunked."""
        transfer = self.headers.get("Transfer-Encoding", "")
        if transfer:
            codings = [c.strip().lower() for c in transfer.split(",")]
            if codings[-1] != "chunked":
                raise ValueError(f"unsupported Transfer-Encoding {transfer!r}")
            return self._read_chunked(), True
        length = self.headers.get("Content-Length")
        if length is None:
            return b"", False
        try:
            n = int(length)
        except ValueError:
            raise ValueError(f"invalid Content-Length {length!r}") from None
        if n < 0:
            raise ValueError(f"invalid Content-Length {length!r}")
        data = self.rfile.read(n)
        if len(data) != n:
            raise Abort("client closed the connection inside the request body")
        return data, False

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            line = self.rfile.readline(65537)
            if not line.endswith(b"\n"):
                raise Abort("client closed the connection inside a chunked body")
            parts.append(line)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ValueError("invalid chunk size line") from None
            if size < 0:
                raise ValueError("invalid chunk size line")
            if size == 0:
                break
            data = self.rfile.read(size + 2)  # chunk data and its CRLF
            if len(data) != size + 2:
                raise Abort("client closed the connection inside a chunked body")
            parts.append(data)
        while True:  # trailer section up to the empty line
            line = self.rfile.readline(65537)
            if not line.endswith(b"\n"):
                raise Abort("client closed the connection inside chunked trailers")
            parts.append(line)
            if line in (b"\r\n", b"\n"):
                break
        return b"".join(parts)

    # --- upstream --------------------------------------------------------------------
    def _new_upstream(self) -> http.client.HTTPConnection:
        up = self.server.upstream
        cls = http.client.HTTPSConnection if up.scheme == "https" else http.client.HTTPConnection
        return cls(up.hostname, up.port, timeout=self.server.upstream_timeout)

    def _close_upstream(self):
        if self._upstream_conn is not None:
            try:
                self._upstream_conn.close()
            except OSError:
                pass
        self._upstream_conn = None
        self._upstream_used = False

    def _upstream_headers(self, chunked: bool) -> list[tuple[str, str]]:
        named_by_connection = {
            token.strip().lower()
            for value in self.headers.get_all("Connection", [])
            for token in value.split(",")
        }
        headers = []
        have_host = False
        for name, value in self.headers.items():
            lower = name.lower()
            if lower in REQUEST_DROP or lower in named_by_connection:
                continue
            if chunked and lower == "content-length":
                continue  # chunked framing wins
            if lower == "host":
                have_host = True
            headers.append((name, value))
        if not have_host:
            headers.insert(0, ("Host", self.server.upstream.netloc))
        return headers

    def _forward(self, body: bytes, chunked: bool) -> http.client.HTTPResponse:
        headers = self._upstream_headers(chunked)
        for attempt in (1, 2):
            if self._upstream_conn is None:
                self._upstream_conn = self._new_upstream()
                self._upstream_used = False
            conn, reused = self._upstream_conn, self._upstream_used
            try:
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                self._upstream_used = True
                return resp
            except (http.client.HTTPException, OSError) as exc:
                self._close_upstream()
                stale = isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                         BrokenPipeError))
                if attempt == 1 and reused and stale:
                    continue  # the upstream closed an idle keep-alive connection
                raise UpstreamError(f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def _finish_upstream(self, resp: http.client.HTTPResponse):
        """Keep the upstream connection only when the response was read to its end."""
        if resp.isclosed():
            return
        try:
            resp.close()
        except OSError:
            pass
        self._close_upstream()

    # --- relaying responses --------------------------------------------------------
    def _framing(self, resp: http.client.HTTPResponse) -> str:
        if self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            return "none"
        if resp.chunked:
            return "chunked" if self.request_version == "HTTP/1.1" else "close"
        if resp.length is not None:
            return "length"
        return "close"

    def _send_head(self, resp: http.client.HTTPResponse, framing: str):
        self.send_response_only(resp.status, resp.reason or None)
        for name, value in resp.getheaders():
            if name.lower() in RESPONSE_DROP:
                continue
            if framing == "chunked" and name.lower() == "content-length":
                continue
            self.send_header(name, value)
        if framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        elif framing == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.server.verbose:
            log(f"-> {resp.status} {self.command} {self.path}")

    def _write(self, data: bytes, framing: str):
        if not data:
            return
        if framing == "chunked":
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(data)

    def _read_upstream(self, resp: http.client.HTTPResponse, amount: int) -> bytes:
        try:
            return resp.read1(amount)
        except (http.client.HTTPException, OSError) as exc:
            # The upstream broke mid-body; the client cannot be answered properly.
            self.server.state.count("upstream_errors")
            log(f"upstream error mid-body: {type(exc).__name__}: {exc} ({self.path})")
            raise Abort("upstream failed mid-body") from None

    def _relay(self, resp: http.client.HTTPResponse):
        framing = self._framing(resp)
        self._send_head(resp, framing)
        if framing == "none":
            resp.read()
            return
        while True:
            data = self._read_upstream(resp, IO_CHUNK)
            if not data:
                break
            self._write(data, framing)
        if framing == "chunked":
            self.wfile.write(b"0\r\n\r\n")

    def _relay_partial(self, resp: http.client.HTTPResponse):
        """Status, headers (as received) and the first part of the body."""
        framing = self._framing(resp)
        self._send_head(resp, framing)
        if framing == "none":
            return
        total = resp.length if resp.length is not None else 2 * PARTIAL_BODY_MAX
        remaining = min(total // 2, PARTIAL_BODY_MAX)
        while remaining > 0:
            data = self._read_upstream(resp, min(IO_CHUNK, remaining))
            if not data:
                break
            self._write(data, framing)
            remaining -= len(data)

    # --- faults ------------------------------------------------------------------------
    def _sleep(self, seconds: float):
        self.server.state.stopping.wait(seconds)

    def _hard_reset(self):
        """Abort the client connection with a TCP RST (no FIN first)."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # The buffered reader holds a reference to the socket; the descriptor
        # is only closed (and the RST sent) once both are closed.
        for closeable in (self.rfile, sock):
            try:
                closeable.close()
            except OSError:
                pass

    def _send_simple(self, status: int, content_type: str, body: bytes,
                     extra_headers: list[tuple[str, str]] = ()):
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        self.send_header("Server", self.server_version)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_s3_error(self, status: int, code: str, resource: str, extra: str = "",
                       message: str | None = None):
        request_id = uuid.uuid4().hex[:16].upper()
        text = message if message is not None else ERROR_MESSAGES.get(code, code)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{xml_escape(text)}</Message>{extra}"
            f"<Resource>{xml_escape(resource)}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        self._send_simple(status, "application/xml", body, [("x-amz-request-id", request_id)])

    # --- control endpoint -------------------------------------------------------------
    def _send_json(self, status: int, value):
        body = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
        self._send_simple(status, "application/json", body)

    def _control(self, path: str, query: str, body: bytes):
        state = self.server.state
        name = path[len(CONTROL_PREFIX):].strip("/")
        if name == "stats" and self.command in ("GET", "HEAD"):
            self._send_json(200, state.stats_json())
        elif name == "config" and self.command in ("GET", "HEAD"):
            self._send_json(200, state.config_json())
        elif name == "config" and self.command in ("POST", "PUT"):
            try:
                update = json.loads(body.decode("utf-8") or "{}")
                config = state.update(update)
            except (ValueError, UnicodeDecodeError) as exc:
                self._send_json(400, {"error": str(exc)})
                return
            log(f"config changed: {json.dumps(update, sort_keys=True)}")
            self._send_json(200, config)
        else:
            self._send_json(404, {"error": f"no control endpoint {self.command} {path}"})


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fault-injecting reverse proxy for an S3-compatible server (tests only).")
    parser.add_argument("--upstream", required=True,
                        help="the S3 server, e.g. http://127.0.0.1:9000")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument("--port-file", help="write the port to this file once listening")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the fault RNG (default: random, logged)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="fault rate of every class unless set per class (default 0)")
    parser.add_argument("--rate-get", type=float, help="fault rate of object GETs")
    parser.add_argument("--rate-list", type=float, help="fault rate of bucket listings")
    parser.add_argument("--rate-upload", type=float, help="fault rate of puts and multipart requests")
    parser.add_argument("--faults", default=DEFAULT_FAULTS,
                        help=f"comma-separated faults to draw from; known: "
                             f"{','.join(FAULT_KINDS)} (default {DEFAULT_FAULTS})")
    parser.add_argument("--stall-seconds", type=float, default=5.0,
                        help="how long a stall lasts before the connection is closed (default 5)")
    parser.add_argument("--fail-always-key", action="append", default=[], metavar="SUBSTR",
                        help="every GET of a key containing SUBSTR gets 503 (repeatable)")
    parser.add_argument("--require-access-key", metavar="KEY",
                        help="answer 403 InvalidAccessKeyId to requests signed with another key")
    parser.add_argument("--upstream-timeout", type=float, default=120.0,
                        help="socket timeout towards the upstream in seconds (default 120)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    upstream = urllib.parse.urlsplit(args.upstream)
    if upstream.scheme not in ("http", "https") or not upstream.hostname:
        parser.error("--upstream must be http://HOST:PORT or https://HOST:PORT")
    if upstream.path not in ("", "/") or upstream.query:
        parser.error("--upstream must not have a path or query")
    try:
        args.fault_list = parse_faults(args.faults)
        args.rates = {
            name: parse_rate(f"--rate-{name}",
                             getattr(args, f"rate_{name}")
                             if getattr(args, f"rate_{name}") is not None else args.rate)
            for name in FAULTABLE
        }
    except ValueError as exc:
        parser.error(str(exc))
    if args.stall_seconds < 0:
        parser.error("--stall-seconds must be >= 0")
    if any(not key for key in args.fail_always_key):
        parser.error("--fail-always-key must not be empty")
    args.upstream_split = upstream
    return args


def _write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)  # readers never see a half-written file


def main(argv=None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    up = args.upstream_split
    state = State(
        upstream=f"{up.scheme}://{up.netloc}",
        rates=args.rates,
        faults=args.fault_list,
        stall_seconds=args.stall_seconds,
        fail_always_keys=args.fail_always_key,
        require_access_key=args.require_access_key,
        seed=seed,
    )
    server = ProxyServer((args.host, args.port), state, up, args.upstream_timeout, args.verbose)
    host, port = server.server_address[:2]

    def _terminate(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.port_file:
            _write_port_file(args.port_file, port)
        log(f"upstream {state.upstream}, seed {seed}, rates {json.dumps(state.rates)}, "
            f"faults {','.join(state.faults) or '-'}")
        print(f"LISTENING http://{host}:{port}", flush=True)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        state.stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
