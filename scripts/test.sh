#!/usr/bin/env bash
# Run the whole test suite the way CI does, on a machine with Rust and Python 3.
#
# Usage: scripts/test.sh [ARGS...]     ARGS go to `cargo nextest run --all-targets`
#                                      (or `cargo test --all-targets` without nextest)
#
# Steps:
#   1. .venv: created with `python3 -m venv` when missing; scripts/requirements-test.txt
#      installed into it whenever that file changed since the last install.
#   2. ONNX Runtime: scripts/setup-ort.sh (skipped when ORT_DYLIB_PATH already names
#      an existing file, e.g. a CUDA build on a GPU machine).
#   3. An S3 server (moto) on 127.0.0.1 at a free port, stopped on exit.
#   4. Test environment exported:
#        LABELFLOW_TEST_S3_ENDPOINT=http://127.0.0.1:PORT
#        AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
#        AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ALLOW_HTTP=true
#        ORT_DYLIB_PATH=<the ONNX Runtime library>
#        LABELFLOW_PYTHON=<repository>/.venv/bin/python
#   5. libtorch for the training job: scripts/setup-torch.sh (PyPI torch==2.11.0,
#      about 550 MB, once), LIBTORCH and LD_LIBRARY_PATH exported; then the tests, with
#      `--features train` so the training tests are part of the one build and run.
#      LABELFLOW_TRAIN_TESTS=0 skips libtorch (tests of the batch job and SQL only).
#
# Exit status: the test command's.
#
# Environment:
#   PYTHON              interpreter that creates .venv (default: python3)
#   LABELFLOW_TEST_DRY  when 1, do steps 1-3, check the S3 server with a bucket
#                       round trip, print the environment, and skip cargo.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

say() { echo "test.sh: $*" >&2; }
die() { echo "test.sh: error: $*" >&2; exit 2; }

# --- 1. Python environment -------------------------------------------------------
venv="$REPO/.venv"
py="$venv/bin/python"
req="$REPO/scripts/requirements-test.txt"
if [[ ! -x "$py" ]]; then
  say "creating $venv"
  "${PYTHON:-python3}" -m venv "$venv" \
    || die "could not create $venv (Debian: apt install python3-venv)"
fi
stamp="$venv/.requirements-test.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  say "installing $(realpath --relative-to="$REPO" "$req") into .venv"
  "$py" -m pip install --quiet --disable-pip-version-check -r "$req" \
    || die "pip install -r $req failed"
  echo "$want" >"$stamp"
fi

# --- 2. ONNX Runtime ---------------------------------------------------------------
if [[ -n "${ORT_DYLIB_PATH:-}" && -f "${ORT_DYLIB_PATH}" ]]; then
  say "using ORT_DYLIB_PATH=$ORT_DYLIB_PATH"
else
  ort_line="$(LABELFLOW_PYTHON="$py" "$REPO/scripts/setup-ort.sh" | tail -n1)" \
    || die "scripts/setup-ort.sh failed"
  [[ "$ort_line" == ORT_DYLIB_PATH=* ]] || die "unexpected output from setup-ort.sh: $ort_line"
  export ORT_DYLIB_PATH="${ort_line#ORT_DYLIB_PATH=}"
fi

# --- 3. S3 server on loopback ------------------------------------------------------
s3_pid=""
cleanup() {
  if [[ -n "$s3_pid" ]] && kill -0 "$s3_pid" 2>/dev/null; then
    kill "$s3_pid" 2>/dev/null || true
    wait "$s3_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$REPO/target"
s3_log="$REPO/target/test-s3-server.log"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$s3_log" 2>&1 &
s3_pid=$!
s3_started="$EPOCHREALTIME"
endpoint="http://127.0.0.1:$port"
# Wait (up to 30 s) until the server answers HTTP.
if ! s3_wait="$("$py" - "$endpoint" "$s3_pid" "$s3_started" <<'PY'
import os, sys, time, urllib.error, urllib.request
url, pid, started = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
while time.time() < started + 30:
    try:
        try:
            urllib.request.urlopen(url + "/", timeout=1).close()
        except urllib.error.HTTPError:
            pass  # any HTTP answer means it is up
        print(f"{time.time() - started:.1f}")
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(1)  # the server exited
        time.sleep(0.1)
sys.exit(1)
PY
)"; then
  tail -n 20 "$s3_log" >&2 || true
  die "the S3 server (moto_server) did not come up on $endpoint; log: $s3_log"
fi
say "S3 server (moto) at $endpoint, pid $s3_pid, ready after ${s3_wait} s"

export LABELFLOW_TEST_S3_ENDPOINT="$endpoint"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ALLOW_HTTP=true
unset AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_PROFILE
export LABELFLOW_PYTHON="$py"
# Tests that need a tool (Python, the S3 server) fail instead of skipping when CI is
# set; this script provides every such tool, so a missing one is a failure here.
export CI="${CI:-true}"

# --- 4. (dry run: check the environment and stop) ----------------------------------
if [[ "${LABELFLOW_TEST_DRY:-}" == 1 ]]; then
  "$py" - <<'PY'
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["LABELFLOW_TEST_S3_ENDPOINT"])
s3.create_bucket(Bucket="dry-run")
s3.put_object(Bucket="dry-run", Key="a/b.txt", Body=b"hello")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="dry-run")["Contents"]]
assert keys == ["a/b.txt"], keys
assert s3.get_object(Bucket="dry-run", Key="a/b.txt")["Body"].read() == b"hello"
print("S3 round trip ok")
PY
  env | grep -E '^(LABELFLOW_|AWS_|ORT_DYLIB_PATH=)' | sort
  say "LABELFLOW_TEST_DRY=1: not running cargo"
  exit 0
fi

# --- 5. libtorch, then the tests --------------------------------------------------
features=()
if [[ "${LABELFLOW_TRAIN_TESTS:-1}" != 0 ]]; then
  torch_env="$("$REPO/scripts/setup-torch.sh" | tail -n2)" || die "scripts/setup-torch.sh failed"
  while IFS= read -r line; do
    case "$line" in
      LIBTORCH=*|LD_LIBRARY_PATH=*) export "${line?}" ;;
      *) die "unexpected output from setup-torch.sh: $line" ;;
    esac
  done <<<"$torch_env"
  features=(--features train)
  say "libtorch: $LIBTORCH"
else
  say "LABELFLOW_TRAIN_TESTS=0: training tests not built or run"
fi

if cargo nextest --version >/dev/null 2>&1; then
  cmd=(cargo nextest run --all-targets "${features[@]}" "$@")
else
  say "cargo-nextest not found; using cargo test"
  cmd=(cargo test --all-targets "${features[@]}" "$@")
fi
say "${cmd[*]}"
set +e
"${cmd[@]}"
rc=$?
set -e
exit "$rc"
