#!/usr/bin/env python3
"""End-to-end check of s3_fault_proxy.py against moto_server, using boto3.

Run it with the repository's virtual environment (it needs boto3 and moto):

    .venv/bin/python tests/tools/check_s3_fault_proxy.py

It starts moto_server on a free loopback port and the proxy in front of it,
then checks, through the proxy:
  1. rates 0: puts, a multipart upload of more than 5 MB, raw chunked and
     aws-chunked puts, paginated listings, full and ranged gets all round-trip
     byte for byte and no fault is injected;
  2. rate 0.3 with every fault kind: with boto3's retries (and a retry of
     body reads, which boto3 leaves to the caller) everything still
     round-trips, and faults of every kind hit every class (get, list, upload);
     one stderr line per fault;
  3. the raw behaviour of each fault: 503/500 XML bodies, a GET reset after
     the headers and part of the body (a real RST), an upload reset with no
     answer, a stall that ends with a close;
  4. --fail-always-key: such a key fails on every try;
  5. --require-access-key: another key gets 403 InvalidAccessKeyId;
  6. clients that disconnect mid-request or mid-response do not hurt the proxy;
  7. SIGTERM stops the proxy with status 0.
Exit status 0 when everything passed, 1 otherwise.

Environment: MOTO_SERVER names the moto_server executable (default: next to
this interpreter, else <repository>/.venv/bin/moto_server).
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import boto3
import botocore.exceptions
import urllib3.exceptions
from botocore.config import Config

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROXY = HERE / "s3_fault_proxy.py"

BUCKET = "fault-proxy-check"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
MiB = 1024 * 1024
SEED = 20240601
FAIL_ALWAYS = "always-broken"
ALL_FAULTS = ["503", "500", "reset", "stall", "stall-body"]
CLIENT_READ_TIMEOUT = 0.5
STALL_SECONDS = 1.5
# A request header that carries a SigV4 credential; moto does not verify signatures.
FAKE_AUTH = (f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20250101/{REGION}/s3/aws4_request, "
             f"SignedHeaders=host, Signature={'0' * 64}")


class CheckFailed(Exception):
    pass


def check(condition, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def say(message: str) -> None:
    print(f"check: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_moto_server() -> str:
    candidates = [os.environ.get("MOTO_SERVER"),
                  str(Path(sys.executable).parent / "moto_server"),
                  str(REPO / ".venv" / "bin" / "moto_server")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise CheckFailed("moto_server not found (set MOTO_SERVER or create .venv)")


def wait_http(url: str, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"{url}: server exited with status {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer will do
        except OSError:
            time.sleep(0.1)
    raise CheckFailed(f"{url}: no answer after {seconds} s")


# --- proxy control -------------------------------------------------------------------

class Proxy:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def _call(self, method: str, name: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.endpoint}/__proxy__/{name}", data=data,
                                         method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def stats(self) -> dict:
        return self._call("GET", "stats")

    def configure(self, **settings) -> dict:
        return self._call("POST", "config", settings)


def fault_counts(stats: dict, cls: str) -> dict:
    return stats["classes"][cls]["faults"]


# --- boto3 helpers -----------------------------------------------------------------------

def s3_client(endpoint: str, access_key: str = ACCESS_KEY, attempts: int = 10):
    config = Config(
        region_name=REGION,
        retries={"total_max_attempts": attempts, "mode": "standard"},
        connect_timeout=2,
        read_timeout=CLIENT_READ_TIMEOUT,
        s3={"addressing_style": "path"},
    )
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                        aws_secret_access_key=SECRET_KEY, config=config)


# Failures while reading a response body, after boto3 returned the response.
BODY_ERRORS = (botocore.exceptions.BotoCoreError, urllib3.exceptions.HTTPError, OSError)


class Reader:
    """GETs with a retry of body reads (boto3 retries the request, not the body)."""

    def __init__(self, s3):
        self.s3 = s3
        self.body_retries = 0

    def get(self, key: str, tries: int = 8, **kwargs) -> bytes:
        last = None
        for _ in range(tries):
            try:
                response = self.s3.get_object(Bucket=BUCKET, Key=key, **kwargs)
                return response["Body"].read()
            except BODY_ERRORS as exc:
                last = exc
                self.body_retries += 1
        raise CheckFailed(f"GET {key}: failed {tries} times, last: {last!r}")


def list_keys(s3, page_size: int) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, PaginationConfig={"PageSize": page_size}):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def multipart_upload(s3, key: str, parts: list[bytes]) -> dict:
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    done = []
    for number, data in enumerate(parts, start=1):
        etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id,
                              PartNumber=number, Body=data)["ETag"]
        done.append({"ETag": etag, "PartNumber": number})
    return s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id,
                                        MultipartUpload={"Parts": done})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# --- raw HTTP helpers ----------------------------------------------------------------------

def raw_connection(port: int, timeout: float = 10) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def raw_put_chunked(port: int, key: str, data: bytes) -> int:
    conn = raw_connection(port)
    pieces = [data[i:i + 7000] for i in range(0, len(data), 7000)]
    conn.request("PUT", f"/{BUCKET}/{key}", body=iter(pieces), encode_chunked=True,
                 headers={"Authorization": FAKE_AUTH, "Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def aws_chunked(data: bytes, chunk: int) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + chunk]), data[i:i + chunk])
                   for i in range(0, len(data), chunk))
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big"))
    return out + b"0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % crc


def raw_put_aws_chunked(port: int, key: str, data: bytes, http_chunked: bool) -> int:
    body = aws_chunked(data, 40000)
    headers = {
        "Authorization": FAKE_AUTH,
        "Content-Encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    conn = raw_connection(port)
    if http_chunked:
        headers["Transfer-Encoding"] = "chunked"
        pieces = [body[i:i + 30000] for i in range(0, len(body), 30000)]
        conn.request("PUT", f"/{BUCKET}/{key}", body=iter(pieces), headers=headers,
                     encode_chunked=True)
    else:
        conn.request("PUT", f"/{BUCKET}/{key}", body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def raw_request(port: int, request: bytes, timeout: float = 10):
    """Send bytes; return (head, body bytes received, error or None)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    received = b""
    error = None
    try:
        sock.sendall(request)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    except OSError as exc:
        error = exc
    finally:
        sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body, error


def get_request(key: str) -> bytes:
    return (f"GET /{BUCKET}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {FAKE_AUTH}\r\nConnection: close\r\n\r\n").encode()


def put_request(key: str, data: bytes) -> bytes:
    return (f"PUT /{BUCKET}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {FAKE_AUTH}\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n").encode() + data


# --- the checks ---------------------------------------------------------------------------

def phase_clean(s3, proxy: Proxy, port: int, rng: random.Random, objects: dict) -> None:
    say("phase 1: rates 0, everything round-trips byte for byte")
    s3.create_bucket(Bucket=BUCKET)
    sizes = [0, 1, 1000, 65536 + 3, 300_000, 1_200_000]
    names = ["empty.bin", "one.bin", "dir/a b+c=\u00e9.bin", "dir/sub/odd.bin",
             "images/0001.jpg", "images/0002.jpg"]
    for name, size in zip(names, sizes):
        data = rng.randbytes(size)
        s3.put_object(Bucket=BUCKET, Key=name, Body=data)
        objects[name] = data
    parts = [rng.randbytes(5 * MiB), rng.randbytes(MiB + 12345)]
    result = multipart_upload(s3, "big/multipart.parquet", parts)
    check(result["ETag"].strip('"').endswith("-2"), f"multipart ETag {result['ETag']}")
    objects["big/multipart.parquet"] = b"".join(parts)

    data = rng.randbytes(100_000)
    check(raw_put_chunked(port, "raw/chunked.bin", data) == 200, "chunked PUT status")
    objects["raw/chunked.bin"] = data
    data = rng.randbytes(90_000)
    check(raw_put_aws_chunked(port, "raw/aws-chunked.bin", data, False) == 200,
          "aws-chunked PUT status")
    objects["raw/aws-chunked.bin"] = data
    data = rng.randbytes(90_000)
    check(raw_put_aws_chunked(port, "raw/aws-chunked-te.bin", data, True) == 200,
          "aws-chunked + Transfer-Encoding: chunked PUT status")
    objects["raw/aws-chunked-te.bin"] = data

    keys = list_keys(s3, page_size=2)
    check(sorted(keys) == sorted(objects), f"listing {sorted(keys)} != {sorted(objects)}")
    reader = Reader(s3)
    for key, data in objects.items():
        got = reader.get(key)
        check(got == data, f"GET {key}: {len(got)} bytes {sha(got)}, "
                           f"want {len(data)} bytes {sha(data)}")
    big = objects["big/multipart.parquet"]
    got = reader.get("big/multipart.parquet", Range="bytes=5242000-5243999")
    check(got == big[5242000:5244000], "ranged GET across the part boundary")
    head = s3.head_object(Bucket=BUCKET, Key="big/multipart.parquet")
    check(head["ContentLength"] == len(big), "HEAD ContentLength")

    stats = proxy.stats()
    totals = stats["totals"]
    check(totals["faults_total"] == 0, f"faults injected at rate 0: {totals['faults']}")
    check(reader.body_retries == 0, "body read retries at rate 0")
    c = stats["classes"]
    check(c["upload"]["requests"] >= len(names) + 4 + 3, f"upload count {c['upload']}")
    check(c["list"]["requests"] >= (len(objects) + 1) // 2, f"list count {c['list']}")
    check(c["get"]["requests"] >= len(objects) + 1, f"get count {c['get']}")
    say(f"  {len(objects)} objects ({sum(map(len, objects.values()))} bytes) round-tripped; "
        f"requests get={c['get']['requests']} list={c['list']['requests']} "
        f"upload={c['upload']['requests']} other={c['other']['requests']}; 0 faults")


def phase_faulty(s3, proxy: Proxy, rng: random.Random, objects: dict) -> dict:
    say("phase 2: rate 0.3, every fault kind, boto3 retries on")
    proxy.configure(rate=0.3, faults=ALL_FAULTS, seed=SEED, reset_stats=True)
    reader = Reader(s3)
    started = time.time()
    for round_number in range(1, 11):
        new = {}
        for i in range(4):
            key = f"faulty/r{round_number}/obj-{i}.bin"
            data = rng.randbytes(rng.choice([10, 5000, 70_000, 250_000]))
            s3.put_object(Bucket=BUCKET, Key=key, Body=data)
            new[key] = data
        parts = [rng.randbytes(5 * MiB), rng.randbytes(300_000)]
        key = f"faulty/r{round_number}/multipart.bin"
        multipart_upload(s3, key, parts)
        new[key] = b"".join(parts)
        objects.update(new)

        keys = list_keys(s3, page_size=3)
        check(sorted(keys) == sorted(objects), "listing under faults differs")
        for key, data in new.items():
            got = reader.get(key)
            check(got == data, f"GET {key} under faults: {len(got)} bytes {sha(got)}, "
                               f"want {len(data)} bytes {sha(data)}")
        stats = proxy.stats()
        missing = [f"{cls}:{kind}" for cls in ("get", "list", "upload") for kind in ALL_FAULTS
                   if fault_counts(stats, cls)[kind] == 0]
        if not missing:
            break
    else:
        raise CheckFailed(f"after 10 rounds some fault kinds never hit: {missing}")

    # Earlier objects are still intact (nothing was half-written by a fault).
    for key in ("big/multipart.parquet", "dir/a b+c=\u00e9.bin", "raw/aws-chunked.bin"):
        check(reader.get(key) == objects[key], f"GET {key} under faults")
    stats = proxy.stats()
    proxy.configure(rate=0.0)
    check(stats["upstream_errors"] == 0, f"upstream errors: {stats['upstream_errors']}")
    say(f"  {round_number} round(s), {time.time() - started:.1f} s, "
        f"{len(objects)} objects verified, {reader.body_retries} body reads retried")
    for cls in ("get", "list", "upload"):
        entry = stats["classes"][cls]
        kinds = " ".join(f"{k}={entry['faults'][k]}" for k in ALL_FAULTS)
        say(f"  {cls}: {entry['requests']} requests, {entry['faults_total']} faults: {kinds}")
    return stats


def phase_raw_faults(proxy: Proxy, port: int, objects: dict) -> None:
    say("phase 3: raw behaviour of each fault")
    key = "images/0002.jpg"
    size = len(objects[key])

    proxy.configure(rate_get=1.0, faults=["503"])
    head, body, error = raw_request(port, get_request(key))
    check(head.startswith(b"HTTP/1.1 503") and b"<Code>SlowDown</Code>" in body
          and b"<Message>Please reduce your request rate.</Message>" in body,
          f"503 fault: {head[:40]!r} {body[:200]!r}")
    proxy.configure(rate_get=1.0, faults=["500"])
    head, body, error = raw_request(port, get_request(key))
    check(head.startswith(b"HTTP/1.1 500") and b"<Code>InternalError</Code>" in body,
          f"500 fault: {head[:40]!r} {body[:200]!r}")

    proxy.configure(rate_get=1.0, faults=["reset"])
    head, body, error = raw_request(port, get_request(key))
    check(head.startswith(b"HTTP/1.1 200"), f"reset GET status line: {head[:40]!r}")
    check(f"content-length: {size}".encode() in head.lower(),
          f"reset GET keeps the full Content-Length: {head!r}")
    check(0 < len(body) < size, f"reset GET sent {len(body)} of {size} body bytes")
    check(body == objects[key][:len(body)], "reset GET partial body is a prefix")
    check(isinstance(error, ConnectionResetError), f"reset GET ends with {error!r}, not RST")
    partial = len(body)

    proxy.configure(rate_get=0.0, rate_upload=1.0, faults=["reset"])
    head, body, error = raw_request(port, put_request("raw/never-stored.bin", b"x" * 5000))
    check(head == b"" and body == b"" and isinstance(error, ConnectionResetError),
          f"reset PUT: {head!r} {body[:40]!r} {error!r}")

    proxy.configure(rate_upload=0.0, rate_list=1.0, faults=["stall"], stall_seconds=0.5)
    request = (f"GET /{BUCKET}?list-type=2 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Authorization: {FAKE_AUTH}\r\n\r\n").encode()
    started = time.time()
    head, body, error = raw_request(port, request)
    waited = time.time() - started
    check(head == b"" and body == b"" and error is None and 0.4 < waited < 5,
          f"stall: {head!r} {error!r} after {waited:.2f} s")

    proxy.configure(rate_list=0.0, rate_get=1.0, faults=["stall-body"], stall_seconds=0.5)
    head, body, error = raw_request(port, get_request(key))
    check(head.startswith(b"HTTP/1.1 200") and 0 < len(body) < size and error is None,
          f"stall-body: {head[:40]!r} {len(body)} bytes {error!r}")

    proxy.configure(rate=0.0, faults=ALL_FAULTS, stall_seconds=STALL_SECONDS)
    check(b"never-stored" not in raw_request(
        port, (f"GET /{BUCKET}?list-type=2 HTTP/1.1\r\nHost: x\r\nAuthorization: {FAKE_AUTH}\r\n"
               f"Connection: close\r\n\r\n").encode())[1], "a reset PUT reached the store")
    say(f"  503/500 XML bodies ok; GET reset after headers + {partial} of {size} body bytes "
        f"with RST; PUT reset with no answer; stall closes after {waited:.2f} s; "
        f"stall-body stops mid-body")


def phase_fail_always(endpoint: str, proxy: Proxy, rng: random.Random) -> None:
    say(f"phase 4: --fail-always-key {FAIL_ALWAYS}")
    attempts = 3
    s3 = s3_client(endpoint, attempts=attempts)
    key = f"data/{FAIL_ALWAYS}-1.bin"
    data = rng.randbytes(1000)
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)  # uploads are not affected
    check(s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == 1000, "HEAD fail-always key")
    before = fault_counts(proxy.stats(), "get")["fail_always"]
    for _ in range(2):
        try:
            s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except botocore.exceptions.ClientError as exc:
            error = exc.response["Error"]
            check(error["Code"] == "SlowDown"
                  and exc.response["ResponseMetadata"]["HTTPStatusCode"] == 503,
                  f"fail-always error {exc.response}")
        else:
            raise CheckFailed(f"GET {key} succeeded")
    after = fault_counts(proxy.stats(), "get")["fail_always"]
    check(after - before == 2 * attempts,
          f"fail-always hits: {after - before}, want {2 * attempts} (every try)")
    check(Reader(s3).get("images/0001.jpg") is not None, "other keys still work")
    say(f"  2 GETs x {attempts} tries: {after - before} x 503 SlowDown, every try failed")


def phase_wrong_key(endpoint: str, proxy: Proxy) -> None:
    say("phase 5: --require-access-key with a wrong key")
    before = fault_counts(proxy.stats(), "list")["denied"]
    wrong = s3_client(endpoint, access_key="AKIAWRONGKEY", attempts=3)
    try:
        wrong.list_objects_v2(Bucket=BUCKET)
    except botocore.exceptions.ClientError as exc:
        check(exc.response["Error"]["Code"] == "InvalidAccessKeyId"
              and exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403,
              f"wrong key error {exc.response}")
    else:
        raise CheckFailed("a wrong access key was accepted")
    try:
        wrong.get_object(Bucket=BUCKET, Key="one.bin")
    except botocore.exceptions.ClientError as exc:
        check(exc.response["Error"]["Code"] == "InvalidAccessKeyId", f"{exc.response}")
    else:
        raise CheckFailed("a wrong access key was accepted for GET")
    head, body, _ = raw_request(port_of(endpoint), (
        f"GET /{BUCKET}?list-type=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode())
    check(head.startswith(b"HTTP/1.1 403") and b"<Code>AccessDenied</Code>" in body,
          f"anonymous request: {head[:40]!r} {body[:200]!r}")
    after = fault_counts(proxy.stats(), "list")["denied"]
    check(after - before == 2, f"denied listings: {after - before}, want 2 (403 is not retried)")
    check(s3_client(endpoint).list_objects_v2(Bucket=BUCKET, MaxKeys=1)["KeyCount"] == 1,
          "the right key still works")
    say("  wrong key: 403 InvalidAccessKeyId (not retried); anonymous: 403 AccessDenied")


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def phase_robustness(endpoint: str, proxy: Proxy, objects: dict) -> None:
    say("phase 6: clients that disconnect mid-request or mid-response")
    port = port_of(endpoint)
    before = proxy.stats()["client_aborts"]
    # A body shorter than its Content-Length.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall((f"PUT /{BUCKET}/cut.bin HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: {FAKE_AUTH}\r\nContent-Length: 100000\r\n\r\n").encode()
                     + b"x" * 10)
    # A chunked body that stops inside a chunk.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall((f"PUT /{BUCKET}/cut2.bin HTTP/1.1\r\nHost: x\r\n"
                      f"Authorization: {FAKE_AUTH}\r\nTransfer-Encoding: chunked\r\n\r\n"
                      f"1000\r\nabc").encode())
    # A client that reads a little of a large response, then goes away.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(get_request("big/multipart.parquet"))
        sock.recv(1000)
    # A client that resets its connection mid-response.
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(get_request("big/multipart.parquet"))
    sock.recv(1000)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    time.sleep(0.5)
    reader = Reader(s3_client(endpoint))
    check(reader.get("big/multipart.parquet") == objects["big/multipart.parquet"],
          "GET after disconnecting clients")
    stats = proxy.stats()
    check(stats["client_aborts"] - before >= 3, f"client aborts: {stats['client_aborts']}")
    keys = list_keys(reader.s3, page_size=1000)
    check("cut.bin" not in keys and "cut2.bin" not in keys, "a cut request body was forwarded")
    say(f"  proxy alive; {stats['client_aborts'] - before} aborted client connections counted")

    # Concurrent clients (keys chosen so that every thread has work of its own).
    s3 = s3_client(endpoint)
    keys = [k for k in objects if k.startswith(("faulty/", "images/", "dir/"))][:24]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda k: (k, Reader(s3).get(k)), keys))
    for key, got in results:
        check(got == objects[key], f"concurrent GET {key}")
    say(f"  {len(keys)} concurrent GETs from 8 threads round-tripped")


def count_fault_lines(log_path: Path) -> int:
    return sum(1 for line in log_path.read_text(errors="replace").splitlines()
               if " fault=" in line)


def start_proxy(upstream: str, work: Path, log_file) -> tuple[subprocess.Popen, str]:
    port_file = work / "proxy.port"
    proc = subprocess.Popen(
        [sys.executable, str(PROXY), "--upstream", upstream, "--port", "0",
         "--seed", str(SEED), "--rate-get", "0", "--rate-list", "0", "--rate-upload", "0",
         "--faults", ",".join(ALL_FAULTS), "--stall-seconds", str(STALL_SECONDS),
         "--fail-always-key", FAIL_ALWAYS, "--fail-always-key", "another-broken-one",
         "--require-access-key", ACCESS_KEY, "--port-file", str(port_file)],
        stdout=subprocess.PIPE, stderr=log_file, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    check(ready, "the proxy printed nothing within 15 s")
    line = proc.stdout.readline().strip()
    check(line.startswith("LISTENING http://127.0.0.1:"), f"proxy's first line: {line!r}")
    endpoint = line.split()[1]
    check(port_file.read_text().strip() == str(port_of(endpoint)), "--port-file content")
    return proc, endpoint


def stop(proc: subprocess.Popen | None) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def main() -> int:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                      AWS_DEFAULT_REGION=REGION, AWS_EC2_METADATA_DISABLED="true")
    moto = proxy_proc = None
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="s3-fault-proxy-check-") as tmp:
        work = Path(tmp)
        moto_log = open(work / "moto.log", "w")
        proxy_log_path = work / "proxy.log"
        proxy_log = open(proxy_log_path, "w")
        try:
            moto_port = free_port()
            upstream = f"http://127.0.0.1:{moto_port}"
            moto = subprocess.Popen([find_moto_server(), "-H", "127.0.0.1", "-p", str(moto_port)],
                                    stdout=moto_log, stderr=subprocess.STDOUT)
            wait_http(upstream + "/", moto, 30)
            proxy_proc, endpoint = start_proxy(upstream, work, proxy_log)
            say(f"moto_server at {upstream}, proxy at {endpoint}")
            proxy = Proxy(endpoint)
            rng = random.Random(SEED)
            objects: dict[str, bytes] = {}
            s3 = s3_client(endpoint)

            phase_clean(s3, proxy, port_of(endpoint), rng, objects)
            faulty_stats = phase_faulty(s3, proxy, rng, objects)
            lines = count_fault_lines(proxy_log_path)
            check(lines == faulty_stats["totals"]["faults_total"],
                  f"{lines} fault lines on stderr, stats say "
                  f"{faulty_stats['totals']['faults_total']}")
            phase_raw_faults(proxy, port_of(endpoint), objects)
            phase_fail_always(endpoint, proxy, rng)
            phase_wrong_key(endpoint, proxy)
            phase_robustness(endpoint, proxy, objects)

            final = proxy.stats()
            check(count_fault_lines(proxy_log_path) == final["totals"]["faults_total"],
                  "one stderr line per injected fault")
            status = stop(proxy_proc)
            check(status == 0, f"proxy exit status after SIGTERM: {status}")
            say(f"phase 7: SIGTERM -> exit status 0; totals: {final['totals']['requests']} "
                f"requests, faults {json.dumps(final['totals']['faults'])}")
            say(f"PASS in {time.time() - started:.1f} s")
            return 0
        except (CheckFailed, botocore.exceptions.BotoCoreError,
                botocore.exceptions.ClientError, OSError) as exc:
            say(f"FAIL: {type(exc).__name__}: {exc}")
            proxy_log.flush()
            tail = proxy_log_path.read_text(errors="replace").splitlines()[-15:]
            for line in tail:
                print(f"  proxy: {line}", file=sys.stderr)
            return 1
        finally:
            stop(proxy_proc)
            stop(moto)
            moto_log.close()
            proxy_log.close()


if __name__ == "__main__":
    sys.exit(main())
