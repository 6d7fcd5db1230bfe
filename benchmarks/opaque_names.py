"""A copy of a dataset whose names on one side are opaque ids, as a DBpedia-Wikidata pair has
(Wikidata's names taken from URIs are Q-numbers): the test bed of the modality signal test.

    python benchmarks/opaque_names.py SRC DST [--side right] [--seed 0]

Every table is copied as it is, except ``entities``: that side's ``name`` becomes ``Q<n>`` with
n a seeded random number (distinct per entity).  Feature tables are not copied (an encoded name
table would still hold the real names).
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from psqe_ray.config import fingerprint
from psqe_ray.io.dataset import Dataset
from psqe_ray.io.writer import DatasetWriter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--side", choices=["left", "right"], default="right")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    src = Dataset(args.src)
    fp = fingerprint({"src": src.manifest["fingerprint"], "side": args.side, "seed": args.seed})
    with DatasetWriter(args.dst, stage="import", fingerprint=fp) as writer:
        if writer.committed:
            print(f"{args.dst} already holds this copy")
            return
        for name in src.tables:
            if name.startswith("features/"):
                continue
            t = src.table(name)
            if name == "entities":
                on = pc.equal(t.column("side"), args.side).to_numpy(zero_copy_only=False)
                rng = np.random.default_rng(args.seed)
                q = rng.choice(10**8, int(on.sum()), replace=False)
                names = np.array(t.column("name").to_pylist(), dtype=object)
                names[on] = [f"Q{v}" for v in q.tolist()]
                t = t.set_column(t.schema.get_field_index("name"), "name",
                                 pa.array(names.tolist(), pa.string()))
            writer.write(name, t)
        writer.commit(meta={"source": args.src, "opaque_names": args.side})
    print(f"{args.dst}: {args.side} names replaced by opaque ids")


if __name__ == "__main__":
    main()
