#!/usr/bin/env python3
"""Deterministic random model input for the golden-logits comparison.

Usage: make_golden_inputs.py [OUT.f32]   (default: golden_input.f32 beside this script)

Writes N=4 x 3 x 224 x 224 standard-normal samples from NumPy's legacy global generator
seeded with 0 (`np.random.seed(0); np.random.standard_normal(shape)`), cast to float32,
as raw little-endian float32 (NCHW), and prints its sha256.
"""
import hashlib
import sys
from pathlib import Path

import numpy as np

N = 4
SHAPE = (N, 3, 224, 224)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "golden_input.f32"
    np.random.seed(0)
    x = np.random.standard_normal(SHAPE).astype("<f4")
    data = x.tobytes()
    out.write_bytes(data)
    print(f"{out}: shape {list(SHAPE)} float32, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
