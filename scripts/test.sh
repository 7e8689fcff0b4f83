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
#   3. Storage servers on 127.0.0.1, each at a free port, for the duration of the
#      tests (scripts/with-servers.py; its header lists the variables it sets):
#        S3 (moto), Azure Blob (azurite, npm ci into tests/tools/azurite once),
#        GCS (fake-gcs-server), WebDAV (wsgidav).
#      Chromium for the report test: apt-get install chromium when missing (as
#      root), LABELFLOW_CHROMIUM exported.
#      PyTorch + torchvision for the import parity test: scripts/setup-torchvision.sh
#      (PyPI, about 4.8 GB, once), LABELFLOW_TORCHVISION_PYTHON exported.
#      Daft and Ray Data for the peers bench test: scripts/setup-peers.sh (PyPI, about
#      400 MB, once), LABELFLOW_PEERS_PYTHON exported.
#   4. Test environment exported: the servers' LABELFLOW_TEST_* addresses, the S3
#      test credentials (AWS_ACCESS_KEY_ID=testing ...), ORT_DYLIB_PATH, and
#        LABELFLOW_PYTHON=<repository>/.venv/bin/python
#   5. libtorch for the training job: scripts/setup-torch.sh (PyPI torch==2.11.0,
#      about 550 MB, once), LIBTORCH and LD_LIBRARY_PATH exported; then the tests, with
#      `--features train` so the training tests are part of the one build and run.
#      LABELFLOW_TRAIN_TESTS=0 skips libtorch (tests of the batch job and SQL only).
#   6. The container image: scripts/image.sh smoke (podman from apt when missing; see its
#      header), after the tests and only when no ARGS narrow them;
#      LABELFLOW_IMAGE_TESTS=0 skips it.
#
# Exit status: the test command's.
#
# Environment:
#   PYTHON              interpreter that creates .venv (default: python3)
#   LABELFLOW_TEST_DRY  when 1, do steps 1-3, start and check the servers, print
#                       their environment, and skip cargo.
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

# --- 1b. nasm: the JPEG decoder's SIMD kernels (build.rs stops without it) -----
if [[ "${LABELFLOW_JPEG_SIMD:-}" != off ]] && ! command -v nasm >/dev/null; then
  say "installing nasm (apt) for the JPEG decoder's SIMD kernels"
  sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo -n)
  { "${sudo[@]}" apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq nasm >/dev/null; } \
    || die "could not install nasm (Debian: apt-get install nasm, as root); or set LABELFLOW_JPEG_SIMD=off to test the slower decoder"
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

# --- 3. Storage servers ------------------------------------------------------------
# The Azure Blob emulator comes from npm (tests/tools/azurite, pinned by its lock file);
# the S3, GCS and WebDAV servers from PyPI (step 1). scripts/with-servers.py starts them
# all on loopback around the test command and stops them after it.
azurite_dir="$REPO/tests/tools/azurite"
azurite_stamp="$azurite_dir/node_modules/.package-lock.sha256"
azurite_want="$(sha256sum "$azurite_dir/package-lock.json" | cut -d' ' -f1)"
if [[ "$(cat "$azurite_stamp" 2>/dev/null || true)" != "$azurite_want" ]]; then
  command -v npm >/dev/null || die "npm is needed for the Azure Blob emulator (Debian: apt install npm, or Node.js 18+)"
  say "installing the Azure Blob emulator (npm azurite) into tests/tools/azurite"
  npm ci --prefix "$azurite_dir" --no-audit --no-fund --ignore-scripts --loglevel=error >&2 \
    || die "npm ci --prefix tests/tools/azurite failed"
  echo "$azurite_want" >"$azurite_stamp"
fi
# Headless Chromium loads the page of `labelflow report` (tests/integration/report.rs).
# A failed install does not stop the other tests: the report test then fails and says
# what is missing.
if [[ -z "${LABELFLOW_CHROMIUM:-}" ]]; then
  if ! command -v chromium >/dev/null; then
    say "installing Chromium (apt: chromium) for the report test"
    sudo=()
    [[ "$(id -u)" == 0 ]] || sudo=(sudo -n)
    { "${sudo[@]}" apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
      || say "warning: could not install Chromium (Debian: apt-get install --no-install-recommends chromium, as root, or set LABELFLOW_CHROMIUM); the report test will fail"
  fi
  if command -v chromium >/dev/null; then
    LABELFLOW_CHROMIUM="$(command -v chromium)"
    export LABELFLOW_CHROMIUM
  fi
fi
# Tests that need a tool (Python, a storage server) fail instead of skipping when CI
# is set; this script provides every such tool, so a missing one is a failure here.
export CI="${CI:-true}"
export LABELFLOW_PYTHON="$py"
servers=("$py" "$REPO/scripts/with-servers.py")

# --- 4. (dry run: check the environment and stop) ----------------------------------
if [[ "${LABELFLOW_TEST_DRY:-}" == 1 ]]; then
  "${servers[@]}" --print-env
  say "LABELFLOW_TEST_DRY=1: not running cargo"
  exit 0
fi

# --- 5. libtorch, then the tests --------------------------------------------------
# PyTorch + torchvision for the import parity test (tests/integration/torchvision.rs):
# their own environment, about 4.8 GB from PyPI once. A failed install does not stop the
# other tests: the parity test then fails and says what is missing.
if [[ -z "${LABELFLOW_TORCHVISION_PYTHON:-}" ]]; then
  if tv_line="$("$REPO/scripts/setup-torchvision.sh" | tail -n1)" \
      && [[ "$tv_line" == LABELFLOW_TORCHVISION_PYTHON=* ]]; then
    export LABELFLOW_TORCHVISION_PYTHON="${tv_line#LABELFLOW_TORCHVISION_PYTHON=}"
  else
    say "warning: scripts/setup-torchvision.sh failed; the torchvision parity test will fail"
  fi
fi
# Daft and Ray Data for the peers bench test (`labelflow bench --peers`): their own
# environment (Daft pins an older pyarrow than the test tools), about 400 MB once.
if [[ -z "${LABELFLOW_PEERS_PYTHON:-}" ]]; then
  if peers_line="$("$REPO/scripts/setup-peers.sh" | tail -n1)" \
      && [[ "$peers_line" == LABELFLOW_PEERS_PYTHON=* ]]; then
    export LABELFLOW_PEERS_PYTHON="${peers_line#LABELFLOW_PEERS_PYTHON=}"
  else
    say "warning: scripts/setup-peers.sh failed; the peers bench test will fail"
  fi
fi
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
# The tests' temporary files go to one folder for this run, removed when it ends, so a
# killed or crashed test cannot leave models and checkpoints behind.
tmp_root="$(mktemp -d "${TMPDIR:-/tmp}/labelflow-tests.XXXXXX")"
trap 'rm -rf "$tmp_root"' EXIT
export TMPDIR="$tmp_root"
set +e
"${servers[@]}" "${cmd[@]}"
rc=$?
set -e

# --- 6. The container image, built and run ----------------------------------------
# scripts/image.sh smoke: podman (apt, when missing), the base images (made locally
# when no registry answers, kept between runs), the CPU image from a binary built here
# without --features train, then doctor, model init, run over the S3 server and query
# inside it, the Indexed Job emulated with one container per index, and
# docker/compose.yaml with podman-compose. LABELFLOW_IMAGE_TESTS=0 leaves it out.
if [[ "${LABELFLOW_IMAGE_TESTS:-1}" != 0 && $# -eq 0 ]]; then
  say "scripts/image.sh smoke"
  t_image=$SECONDS
  set +e
  "${servers[@]}" --only s3 "$REPO/scripts/image.sh" smoke
  image_rc=$?
  set -e
  say "image smoke: exit $image_rc in $((SECONDS - t_image)) s"
  [[ $image_rc == 0 ]] || say "error: scripts/image.sh smoke failed"
  [[ $rc != 0 || $image_rc == 0 ]] || rc=$image_rc
fi
exit "$rc"
