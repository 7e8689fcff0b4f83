#!/usr/bin/env python3
"""Run a labelflow job as N shards on a Ray cluster: one Ray task per shard, each running
`labelflow run <ARGS> --shard=I/N` on some node, retried when its worker dies.

Usage:
  python docker/ray/run.py --shards N --bin PATH [--address ADDR] [options] -- RUN_ARGS...

  RUN_ARGS   the arguments of `labelflow run`, the same for every shard (input, output,
             model, pipeline file...); the launcher adds --shard=I/N
  --bin      the labelflow binary, at this path on every node (a shared folder, or the
             image every node runs); ~ and relative paths are resolved on the driver
  --address  a running cluster (`ray start --head` prints it; "auto" finds the local one);
             without it a local cluster of this machine is started for the job

A shard's exit code decides what happens (docs/deploy.md, exit codes for schedulers):
  0   labelled                                       done
  1   finished, some images are error rows           done (the job exits 1)
  2   fatal: bad config, model, credentials, input   not retried; the job exits 2
  3   interrupted after publishing (SIGTERM)         retried: the shard continues its run
  4   another live worker holds the shard's lease    run again with --wait (in the same
                                                     task, not counted as a retry)
  killed by a signal, its Ray worker or node died    retried: the shard continues its run
  anything else                                      retried
Retries are up to --max-retries per shard (Ray's task retries); a shard that is still
failing after them fails the job (exit 2), and the launcher names every failed shard.
A retried shard continues the run its earlier attempt left unfinished, so no image is
written twice (the shard's lease keeps two attempts from writing at once).

Each task asks Ray for --cpus-per-shard CPUs (default 1), so shards never take every CPU
of a node away from Ray's own work. Variables for the stores and ONNX Runtime (AWS_*,
AZURE_*, AZURITE_*, GOOGLE_*, ORT_DYLIB_PATH, LD_LIBRARY_PATH, LABELFLOW_*) are passed
from the driver's environment to every task.

Exit status: 0 every shard labelled everything, 1 every shard finished and some images
are error rows, 2 some shard failed (named on stderr) or the launch itself failed.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque

PASSED_ENV_PREFIXES = ("AWS_", "AZURE_", "AZURITE_", "GOOGLE_", "LABELFLOW_")
PASSED_ENV = ("ORT_DYLIB_PATH", "LD_LIBRARY_PATH", "RUST_LOG")

FATAL = 2
INTERRUPTED = 3
LEASE_HELD = 4


class ShardFailed(Exception):
    """A shard's labelflow exited with a code worth retrying (or was killed)."""

    def __init__(self, shard: str, code: int, tail: str):
        super().__init__(f"shard {shard}: {describe(code)}{tail}")
        self.shard, self.code, self.tail = shard, code, tail

    def __reduce__(self):
        return (ShardFailed, (self.shard, self.code, self.tail))


class ShardFatal(Exception):
    """A shard's labelflow exited 2: retrying cannot help."""

    def __init__(self, shard: str, tail: str):
        super().__init__(f"shard {shard}: fatal (exit 2){tail}")
        self.shard, self.tail = shard, tail

    def __reduce__(self):
        return (ShardFatal, (self.shard, self.tail))


def describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == INTERRUPTED:
        return "interrupted (exit 3)"
    return f"exit {code}"


def die_with_parent() -> None:
    """In the child: be killed when the task's worker process dies (PR_SET_PDEATHSIG),
    so a shard never outlives the Ray worker that runs it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_once(argv: list[str], shard: str) -> tuple[int, str]:
    """Run labelflow, forwarding its stderr line by line with the shard's name in front;
    return its exit code and its last stderr lines."""
    child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=sys.stdout,
        stderr=subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    tail: deque[str] = deque(maxlen=8)

    def pump() -> None:
        for raw in child.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            print(f"[shard {shard}] {line}", file=sys.stderr, flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = child.wait()
    except BaseException:
        # The task is being cancelled (the driver stopped): let labelflow publish what it
        # has (it exits 3 after its --stop-grace), then go.
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    reader.join(timeout=5)
    return code, "".join(f"\n    {line}" for line in tail)


def shard_task(binary: str, index: int, count: int, args: list[str], attempts) -> dict:
    shard = f"{index}/{count}"
    attempt = ray_get(attempts.add.remote(index))
    started = time.time()
    argv = [binary, "run", *args, f"--shard={shard}"]
    code, tail = run_once(argv, shard)
    if code == LEASE_HELD and "--wait" not in args:
        # Another live worker is writing this shard (an earlier attempt on a node that
        # has not noticed it lost its task, or a second launch): wait for it to stop or
        # for its lease to lapse, then go on from what it published.
        print(f"[shard {shard}] another worker holds the lease; waiting for it (--wait)", file=sys.stderr, flush=True)
        code, tail = run_once([*argv, "--wait"], shard)
    if code == FATAL:
        raise ShardFatal(shard, tail)
    if code not in (0, 1):
        raise ShardFailed(shard, code, tail)
    return {"shard": index, "code": code, "attempt": attempt, "seconds": time.time() - started}


def ray_get(ref):
    import ray

    return ray.get(ref)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" in argv:
        cut = argv.index("--")
        ours, run_args = argv[:cut], argv[cut + 1 :]
    else:
        ours, run_args = argv, []
    p = argparse.ArgumentParser(
        prog="docker/ray/run.py",
        description="Run `labelflow run` as N shards on a Ray cluster (one task per shard).",
        epilog="Everything after -- goes to `labelflow run` on every shard.",
    )
    p.add_argument("--shards", type=int, required=True, help="number of shards (tasks)")
    p.add_argument("--bin", required=True, help="the labelflow binary, at this path on every node")
    p.add_argument("--address", help="a running Ray cluster; without it a local one is started")
    p.add_argument("--cpus-per-shard", type=float, default=1.0, help="CPUs Ray reserves per shard (default 1)")
    p.add_argument("--gpus-per-shard", type=float, default=0.0, help="GPUs Ray reserves per shard (default 0)")
    p.add_argument("--max-retries", type=int, default=3, help="retries of a shard whose worker died or that failed (default 3)")
    opts = p.parse_args(ours)
    if opts.shards < 1:
        p.error("--shards must be at least 1")
    if not run_args:
        p.error("give the `labelflow run` arguments after --, e.g. -- --input DIR --output OUT --model M")
    for a in run_args:
        if a == "--shard" or a.startswith("--shard=") or a == "--shards" or a.startswith("--shards="):
            p.error(f"{a} is set by the launcher (one shard per task); leave it out of the run arguments")
    return opts, run_args


def main(argv: list[str]) -> int:
    opts, run_args = parse(argv)
    binary = os.path.abspath(os.path.expanduser(opts.bin))
    if not opts.address and not os.access(binary, os.X_OK):
        print(f"run.py: error: no labelflow binary at {binary} (build it: cargo build --release)", file=sys.stderr)
        return FATAL
    # Every shard's lines, not one of each kind (Ray folds repeated lines by default).
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
    except ImportError:
        print("run.py: error: Ray is not installed in this Python (pip install 'ray==2.60.0')", file=sys.stderr)
        return FATAL

    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES) or k in PASSED_ENV}
    ray.init(
        address=opts.address,
        runtime_env={"env_vars": env},
        log_to_driver=True,
        logging_level="WARNING",
        include_dashboard=False if not opts.address else None,
    )

    @ray.remote(num_cpus=0)
    class Attempts:
        """How many times each shard has started (a retried task starts again)."""

        def __init__(self):
            self.counts: dict[int, int] = {}

        def add(self, index: int) -> int:
            self.counts[index] = self.counts.get(index, 0) + 1
            return self.counts[index]

        def all(self) -> dict[int, int]:
            return dict(self.counts)

    attempts = Attempts.remote()
    task = ray.remote(shard_task).options(
        num_cpus=opts.cpus_per_shard,
        num_gpus=opts.gpus_per_shard,
        max_retries=opts.max_retries,
        retry_exceptions=[ShardFailed],
        scheduling_strategy="SPREAD",
    )
    t0 = time.time()
    pending = {task.remote(binary, i, opts.shards, run_args, attempts): i for i in range(opts.shards)}
    results: dict[int, dict] = {}
    failed: dict[int, str] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    failed[i] = str(cause)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as e:
                    failed[i] = f"shard {i}/{opts.shards}: its worker died after every retry ({type(e).__name__})"
                except ray.exceptions.RayError as e:
                    failed[i] = f"shard {i}/{opts.shards}: {type(e).__name__}: {e}"
    except KeyboardInterrupt:
        print("run.py: stopping: cancelling the shards (each publishes what it has)", file=sys.stderr)
        for ref in pending:
            ray.cancel(ref)
        raise
    counts = ray.get(attempts.all.remote())
    wall = time.time() - t0

    print(f"{'shard':>7}  {'attempts':>8}  {'exit':>4}  status")
    for i in range(opts.shards):
        if i in results:
            r = results[i]
            status = "labelled" if r["code"] == 0 else "finished, some error rows"
            print(f"{i:>3}/{opts.shards:<3}  {counts.get(i, 0):>8}  {r['code']:>4}  {status}")
        else:
            print(f"{i:>3}/{opts.shards:<3}  {counts.get(i, 0):>8}  {'-':>4}  failed")
    retried = sum(max(0, n - 1) for n in counts.values())
    print(f"{len(results)} of {opts.shards} shards finished, {retried} retries, {wall:.1f} s", flush=True)
    if failed:
        names = ", ".join(f"{i}/{opts.shards}" for i in sorted(failed))
        print(f"run.py: error: shards {names} failed:", file=sys.stderr)
        for i in sorted(failed):
            print(f"  {failed[i]}", file=sys.stderr)
        return FATAL
    return 1 if any(r["code"] == 1 for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
