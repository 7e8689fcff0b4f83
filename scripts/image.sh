#!/usr/bin/env bash
# Build the labelflow container images with podman and check that they work.
#
# Usage:
#   scripts/image.sh build [cpu|cuda] [--bin PATH] [--resolve-only]
#       cpu   localhost/labelflow:cpu from docker/Dockerfile's `cpu` target
#       cuda  localhost/labelflow:cuda (the default target: onnxruntime-gpu with CUDA 13
#             and cuDNN 9 from PyPI, about 2.5 GB); --resolve-only builds every step but
#             lets pip only resolve the CUDA wheels (`pip install --dry-run`), which checks
#             the Dockerfile and the pinned wheels without downloading them
#       --bin PATH  put this labelflow binary in the image instead of compiling the
#             project inside the build (Dockerfile stage `build`); it must be built for
#             Debian 12 (glibc 2.36) without `--features train`
#   scripts/image.sh smoke
#       build cpu (from a host binary: --bin, LABELFLOW_BIN, or `cargo build --bin
#       labelflow`), resolve cuda, then in the CPU image: `doctor`, `model init`, `run`
#       over an S3 server, `query`, the rows checked; then the Kubernetes Indexed Job
#       emulated with one container per index (JOB_COMPLETION_INDEX, --restart
#       on-failure), the union checked; then docker/compose.yaml with podman-compose
#       (netavark, which needs iptables).
#       The S3 server is the tests' (LABELFLOW_TEST_S3_ENDPOINT) or one started with
#       scripts/with-servers.py --only s3 around the smoke.
#   scripts/image.sh bases
#       make the base images the Dockerfile and compose file name when absent
#
# Podman is installed with apt when missing (as root, or with sudo -n). Base images are
# pulled when a registry answers; otherwise they are made locally from the Debian
# mirror (mmdebstrap) and tagged with the names the FROM lines use, once per machine:
#   docker.io/library/debian:12-slim   a minimal bookworm (about 72 MB)
#   docker.io/motoserver/moto:5.2.5    that plus moto[server] from PyPI (compose's S3)
# The host's extra CA certificates (/usr/local/share/ca-certificates) are copied into a
# locally made base, so downloads during a build work behind a TLS-inspecting proxy.
#
# Environment:
#   LABELFLOW_BIN        the binary for build/smoke (as --bin)
#   LABELFLOW_PYTHON     Python with moto and boto3 (default .venv/bin/python)
#   LABELFLOW_IMAGE_COMPOSE=0   smoke skips the compose run
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

say() { echo "image.sh: $*" >&2; }
die() { echo "image.sh: error: $*" >&2; exit 2; }

SLIM=docker.io/library/debian:12-slim
MOTO=docker.io/motoserver/moto:5.2.5
CPU_TAG=localhost/labelflow:cpu
CUDA_TAG=localhost/labelflow:cuda
PY="${LABELFLOW_PYTHON:-$REPO/.venv/bin/python}"

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo -n "$@"; fi
}

# --- podman ------------------------------------------------------------------------
ensure_podman() {
  if command -v podman >/dev/null && command -v mmdebstrap >/dev/null \
      && [[ -x /usr/lib/podman/aardvark-dns || -n "$(command -v aardvark-dns)" ]] \
      && { command -v iptables >/dev/null || [[ -x /usr/sbin/iptables ]]; }; then
    return
  fi
  say "installing podman (apt: podman runc mmdebstrap uidmap netavark aardvark-dns iptables)"
  local t0=$SECONDS
  { as_root apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        podman runc buildah mmdebstrap uidmap netavark aardvark-dns iptables fuse-overlayfs slirp4netns >/dev/null; } \
    || die "could not install podman (Debian 12: apt-get install podman runc mmdebstrap netavark aardvark-dns, as root)"
  say "podman installed in $((SECONDS - t0)) s"
}

# A container that cannot start with podman's defaults usually meets a sandbox that
# refuses crun's cgroup handling or podman's open-files limit: docker/podman/containers.conf
# sets runc and lower limits. Used only when the defaults fail.
ensure_runs() {
  local image="$1" err
  # Debian's podman picks CNI when its bridge config is present, but the CNI plugins are
  # only a recommended package: compose's network (and its service names) needs netavark.
  if [[ -z "${CONTAINERS_CONF:-}" && "$(podman info --format '{{.Host.NetworkBackend}}' 2>/dev/null)" == cni ]] \
      && [[ ! -x /usr/lib/cni/bridge && ! -x /usr/libexec/cni/bridge && ! -x /opt/cni/bin/bridge ]]; then
    export CONTAINERS_CONF="$REPO/docker/podman/containers.conf"
    say "podman's network backend is CNI without its plugins; using docker/podman/containers.conf (netavark, runc)"
  fi
  if err="$(podman run --rm --network=none "$image" true 2>&1)"; then
    return
  fi
  export CONTAINERS_CONF="$REPO/docker/podman/containers.conf"
  if podman run --rm --network=none "$image" true >/dev/null 2>&1; then
    say "podman's defaults failed here (${err##*$'\n'}); using docker/podman/containers.conf (runc, nofile 20000)"
    return
  fi
  die "podman cannot start a container here: $err"
}

registry_answers() {
  timeout 8 podman pull -q "$1" >/dev/null 2>&1
}

# --- base images --------------------------------------------------------------------
make_slim() {
  podman image exists "$SLIM" && return
  if registry_answers "$SLIM"; then say "pulled $SLIM"; return; fi
  command -v mmdebstrap >/dev/null || die "mmdebstrap is needed to make $SLIM without a registry (apt-get install mmdebstrap)"
  say "no registry answers: making $SLIM locally from the Debian mirror (mmdebstrap, about 2 min, once)"
  local t0=$SECONDS work sources
  work="$(mktemp -d)"
  sources=/etc/apt/sources.list.d/debian.sources
  [[ -f "$sources" ]] || sources="deb http://deb.debian.org/debian bookworm main"
  # An apt variant without docs, man pages, locales and perl (usrmerge's chain).
  DEBIAN_FRONTEND=noninteractive mmdebstrap --quiet --variant=apt --include=usr-is-merged \
    --dpkgopt=force-unsafe-io \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='chroot "$1" apt-get purge -y -q --allow-remove-essential usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl perl perl-modules-5.36 libperl5.36 libgdbm6 libgdbm-compat4 >/dev/null' \
    --customize-hook='sed -i /force-unsafe-io/d "$1"/etc/dpkg/dpkg.cfg.d/99mmdebstrap' \
    --customize-hook='mkdir -p "$1"/usr/local/share/ca-certificates; cp /usr/local/share/ca-certificates/*.crt "$1"/usr/local/share/ca-certificates/ 2>/dev/null || true' \
    bookworm "$work/slim.tar" "$sources" \
    || die "mmdebstrap of bookworm failed"
  podman import -q --change 'CMD ["/bin/bash"]' "$work/slim.tar" "$SLIM" >/dev/null
  rm -rf "$work"
  say "made $SLIM in $((SECONDS - t0)) s"
}

make_moto() {
  podman image exists "$MOTO" && return
  if registry_answers "$MOTO"; then say "pulled $MOTO"; return; fi
  say "making $MOTO locally (moto[server] from PyPI on $SLIM)"
  local work
  work="$(mktemp -d)"
  cat >"$work/Containerfile" <<EOF
FROM $SLIM
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \\
 && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/moto \\
 && /opt/moto/bin/pip install --no-cache-dir --disable-pip-version-check -q "moto[server]==${MOTO##*:}"
ENV PATH=/opt/moto/bin:\$PATH
EXPOSE 5000
ENTRYPOINT ["/opt/moto/bin/moto_server", "-H", "0.0.0.0"]
EOF
  podman build -q --pull=never --network=host -t "$MOTO" -f "$work/Containerfile" "$work" >/dev/null \
    || die "building the moto stand-in failed"
  rm -rf "$work"
}

# --- the labelflow binary for the image ----------------------------------------------
host_binary() {
  local bin="${1:-${LABELFLOW_BIN:-}}"
  if [[ -z "$bin" ]]; then
    # The test profile (the dev profile's settings) reuses the dependencies the test
    # build compiled; a plain `cargo build` would compile all of them a second time.
    say "cargo build --profile test --bin labelflow (the image's binary, without --features train)"
    cargo build --quiet --profile test --bin labelflow || die "cargo build --profile test --bin labelflow failed"
    bin="$REPO/target/debug/labelflow"
  fi
  [[ -x "$bin" ]] || die "no labelflow binary at $bin"
  if ldd "$bin" 2>/dev/null | grep -q 'libtorch'; then
    die "$bin links libtorch (built with --features train), which the image does not ship; build one without it: cargo build --bin labelflow"
  fi
  echo "$bin"
}

# The Dockerfile's `build` stage replaced by a folder holding the host's binary where
# that stage would have put it (podman build --build-context), so the image is built
# without compiling the project a second time.
build_image() {
  local target="$1" bin="$2" resolve_only="$3" tag args=() t0=$SECONDS
  tag=$([[ "$target" == cpu ]] && echo "$CPU_TAG" || echo "$CUDA_TAG")
  if [[ -n "$bin" ]]; then
    local ctx
    ctx="$(mktemp -d)"
    mkdir -p "$ctx/src/target/release"
    # Debug info is not needed in the image (a panic's backtrace still names functions).
    objcopy --strip-debug "$bin" "$ctx/src/target/release/labelflow" 2>/dev/null \
      || cp "$bin" "$ctx/src/target/release/labelflow"
    args+=(--build-context "build=$ctx")
    say "building $tag from $(realpath --relative-to="$REPO" "$bin" 2>/dev/null || echo "$bin") (no compile in the image)"
  else
    say "building $tag, compiling the project inside the image (a release build: 20-30 min on 2 cores)"
  fi
  if [[ "$resolve_only" == 1 ]]; then
    args+=(--build-arg "PIP_RESOLVE_ONLY=--dry-run")
    tag="$tag-resolved"
  fi
  podman build --pull=never --network=host "${args[@]}" -f docker/Dockerfile --target "$target" -t "$tag" . \
    >"${IMAGE_LOG:-/dev/stderr}" 2>&1 || { [[ -n "${IMAGE_LOG:-}" ]] && tail -n 30 "$IMAGE_LOG" >&2; die "podman build --target $target failed"; }
  [[ -n "${ctx:-}" ]] && rm -rf "$ctx"
  local size
  size="$(podman image inspect --format '{{.Size}}' "$tag")"
  say "built $tag: $((size / 1000000)) MB in $((SECONDS - t0)) s"
}

# --- smoke ---------------------------------------------------------------------------
upload_photos() {  # endpoint bucket prefix dir
  "$PY" - "$@" <<'EOF'
import os, sys, boto3
endpoint, bucket, prefix, root = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
n = 0
for d, _, files in os.walk(root):
    for f in sorted(files):
        p = os.path.join(d, f)
        s3.upload_file(p, bucket, prefix + os.path.relpath(p, root))
        n += 1
print(n)
EOF
}

# labelflow inside the CPU image, on the host's network (the S3 server is on loopback).
# `in_image --keep ...` leaves the container for `podman wait` (--restart excludes --rm).
in_image() {
  local rm=(--rm)
  [[ "${1:-}" == --keep ]] && { rm=(); shift; }
  podman run "${rm[@]}" --network=host -v "$SMOKE_DIR:/work:Z" -w /work \
    -e AWS_ACCESS_KEY_ID=testing -e AWS_SECRET_ACCESS_KEY=testing -e AWS_REGION=us-east-1 \
    -e AWS_ENDPOINT="$S3" -e AWS_ALLOW_HTTP=true "$@"
}

check_count() {  # what got want
  [[ "$2" == "$3" ]] || die "$1: got $2, want $3"
  say "ok: $1 = $2"
}

smoke() {
  local t0=$SECONDS
  if [[ -z "${LABELFLOW_TEST_S3_ENDPOINT:-}" ]]; then
    [[ -x "$PY" ]] || die "no Python with moto at $PY (scripts/test.sh creates .venv)"
    exec "$PY" "$REPO/scripts/with-servers.py" --only s3 "$0" smoke
  fi
  S3="$LABELFLOW_TEST_S3_ENDPOINT"
  ensure_podman
  make_slim
  ensure_runs "$SLIM"
  local bin
  bin="$(host_binary "${BIN_ARG:-}")"
  IMAGE_LOG="$(mktemp)" build_image cpu "$bin" 0
  IMAGE_LOG="$(mktemp)" build_image cuda "$bin" 1
  SMOKE_DIR="$(mktemp -d)"
  trap 'rm -rf "$SMOKE_DIR"' EXIT

  # doctor, without a network: the entry point finds the image's ONNX Runtime.
  local out
  out="$(podman run --rm --network=none "$CPU_TAG" doctor 2>&1)" || { echo "$out" >&2; die "doctor failed in $CPU_TAG"; }
  grep -q 'CPUExecutionProvider' <<<"$out" || { echo "$out" >&2; die "doctor in $CPU_TAG lists no CPU provider"; }
  grep -q 'SIMD on' <<<"$out" || { echo "$out" >&2; die "the image's JPEG decoder is built without SIMD"; }
  say "ok: doctor in $CPU_TAG"

  # model init, run over S3, query: one row per photo, none an error.
  local want
  want="$(upload_photos "$S3" image-smoke photos/ tests/data/photos)"
  in_image "$CPU_TAG" model init --out /work/alexnet.onnx --classes 10 --width 0.25 --input-size 64 >/dev/null
  local rc=0
  in_image "$CPU_TAG" run --input s3://image-smoke/photos/ --output s3://image-smoke/preds/ \
    --model /work/alexnet.onnx --batch-size 4 --no-progress 2>"$SMOKE_DIR/run.log" || rc=$?
  [[ $rc == 0 ]] || { cat "$SMOKE_DIR/run.log" >&2; die "labelflow run in $CPU_TAG exited $rc"; }
  local got
  got="$(in_image "$CPU_TAG" query --data s3://image-smoke/preds/ --format csv \
    "SELECT count(*) AS n, count(DISTINCT uri) AS u, count(error) AS e FROM latest" | tail -n1)"
  check_count "rows, distinct uris, errors from run+query in the image" "$got" "$want,$want,0"

  # The Kubernetes Indexed Job, emulated: one container per index, the index in
  # JOB_COMPLETION_INDEX, restarted on failure like backoffLimitPerIndex.
  local n=4 i ids=()
  for ((i = 0; i < n; i++)); do
    ids+=("$(in_image --keep -d --restart=on-failure:3 -e JOB_COMPLETION_INDEX=$i "$CPU_TAG" \
      run --input s3://image-smoke/photos/ --output s3://image-smoke/sharded/ \
      --model /work/alexnet.onnx --batch-size 4 --shards=$n --no-progress)")
  done
  for id in "${ids[@]}"; do
    rc="$(podman wait "$id")"
    [[ "$rc" == 0 ]] || { podman logs "$id" >&2; die "an indexed worker exited $rc"; }
    podman rm -f "$id" >/dev/null
  done
  got="$(in_image "$CPU_TAG" query --data s3://image-smoke/sharded/ --format csv \
    "SELECT count(*) AS n, count(DISTINCT uri) AS u, count(DISTINCT run_id) AS r FROM predictions" | tail -n1)"
  check_count "rows, distinct uris, runs of $n indexed containers" "$got" "$want,$want,$n"

  [[ "${LABELFLOW_IMAGE_COMPOSE:-1}" == 0 ]] || compose
  say "smoke passed in $((SECONDS - t0)) s; images: $(podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep labelflow | tr '\n' ';')"
}

# docker/compose.yaml as a user runs it: its S3 server, the seed, the one-shot job.
compose() {
  local pc
  pc="$(dirname "$PY")/podman-compose"
  [[ -x "$pc" ]] || die "podman-compose is missing from $(dirname "$PY") (pip install podman-compose; scripts/requirements-test.txt has it)"
  make_moto
  local log="$SMOKE_DIR/compose.log" rc=0 t0=$SECONDS up i
  # `up` in the foreground as a user runs it; the S3 server keeps running after the
  # one-shot job, so the job's exit is awaited and then the project is taken down.
  # (--abort-on-container-exit would stop everything when `seed` finishes.)
  "$pc" -f docker/compose.yaml -p labelflow-smoke up >"$log" 2>&1 &
  up=$!
  # (`podman wait` returns at once for a container still in "created", so poll its state.)
  local job=labelflow-smoke_labelflow_1 state=""
  for ((i = 0; i < 600; i++)); do
    state="$(podman inspect --format '{{.State.Status}}' "$job" 2>/dev/null || true)"
    [[ "$state" == exited ]] && break
    kill -0 "$up" 2>/dev/null || break
    sleep 1
  done
  if [[ "$state" == exited ]]; then
    rc="$(podman inspect --format '{{.State.ExitCode}}' "$job")"
  else
    rc="not finished (state: ${state:-none})"
  fi
  sleep 1
  "$pc" -f docker/compose.yaml -p labelflow-smoke down -t 2 >/dev/null 2>&1 || true
  wait "$up" 2>/dev/null || true
  [[ "$rc" == 0 ]] || { tail -n 40 "$log" >&2; die "compose's labelflow job exited $rc"; }
  # class_counts as a table: the labelled images add up to the bundled photos.
  local want got
  want="$(find tests/data/photos -type f | wc -l)"
  # podman-compose prefixes each line with a coloured "[service] | "; the table's rows are then
  # "| label | images | share | mean_score |".
  got="$(sed -E 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^\[labelflow\]' | sed -E 's/^\[[^]]*\] *\| ?//' \
    | awk -F'|' 'NF >= 6 && $3 ~ /^ *[0-9]+ *$/ {s += $3} END {print s + 0}')"
  check_count "images counted by compose's query ($((SECONDS - t0)) s)" "$got" "$want"
}

# --- commands ------------------------------------------------------------------------
cmd="${1:-}"
shift || true
BIN_ARG=""
RESOLVE=0
TARGET=cpu
while [[ $# -gt 0 ]]; do
  case "$1" in
    cpu|cuda) TARGET="$1" ;;
    --bin) BIN_ARG="$2"; shift ;;
    --bin=*) BIN_ARG="${1#--bin=}" ;;
    --resolve-only) RESOLVE=1 ;;
    *) die "unknown argument $1 (see the header of scripts/image.sh)" ;;
  esac
  shift
done
case "$cmd" in
  build)
    ensure_podman; make_slim; ensure_runs "$SLIM"
    bin=""
    if [[ -n "$BIN_ARG" || -n "${LABELFLOW_BIN:-}" ]]; then bin="$(host_binary "$BIN_ARG")"; fi
    build_image "$TARGET" "$bin" "$RESOLVE"
    ;;
  smoke) smoke ;;
  bases) ensure_podman; make_slim; ensure_runs "$SLIM"; make_moto ;;
  *) die "usage: scripts/image.sh build [cpu|cuda] [--bin PATH] [--resolve-only] | smoke | bases" ;;
esac
