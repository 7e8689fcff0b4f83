#!/usr/bin/env python3
"""Start a local Ray cluster of several nodes (separate raylets on this machine), run a
command with its address, stop the cluster, exit with the command's status.

Usage: ray_cluster.py [--nodes N] [--cpus-per-node C] -- COMMAND [ARGS...]
       The string {address} in COMMAND's arguments becomes the cluster's address.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv:
        print("usage: ray_cluster.py [--nodes N] [--cpus-per-node C] -- COMMAND...", file=sys.stderr)
        return 2
    cut = argv.index("--")
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cpus-per-node", type=int, default=1)
    opts = p.parse_args(argv[:cut])
    command = argv[cut + 1 :]

    from ray.cluster_utils import Cluster

    t0 = time.time()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": opts.cpus_per_node, "include_dashboard": False},
    )
    try:
        for _ in range(opts.nodes - 1):
            cluster.add_node(num_cpus=opts.cpus_per_node)
        cluster.wait_for_nodes()
        print(
            f"ray_cluster: {opts.nodes} nodes of {opts.cpus_per_node} CPU up at {cluster.address} in {time.time() - t0:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        command = [a.replace("{address}", cluster.address) for a in command]
        return subprocess.call(command)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
