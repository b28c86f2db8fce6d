"""Write models/data/mnist-test-1k.npz: the first 1000 MNIST test images, so the demo runs on a fresh clone.

    python scripts/make_demo_data.py [--data ../shared/data]

x: uint8 [1000, 28, 28], y: uint8 [1000], in the official test order (compressed npz, no pickle).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runtime.data import load_dataset  # noqa: E402

N = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="data root")
    parser.add_argument("-o", "--output", default=str(REPO / "models" / "data" / "mnist-test-1k.npz"))
    args = parser.parse_args()
    ds = load_dataset("mnist", "test", root=args.data)
    if ds.name != "mnist" or ds.x.shape[0] < N or ds.x.shape[1:] != (28, 28):
        sys.exit(f"expected the full MNIST test split under {args.data}, got {ds.x.shape}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, x=ds.x[:N].astype(np.uint8), y=ds.y[:N].astype(np.uint8))
    print(f"wrote {out} ({out.stat().st_size} bytes, class counts {np.bincount(ds.y[:N]).tolist()})")


if __name__ == "__main__":
    main()
