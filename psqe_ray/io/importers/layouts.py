"""The layouts that :func:`~psqe_ray.io.importers.import_pair` reads: each format's gold files."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """What a format reads besides the graphs: its gold link files."""

    gold: tuple[str, ...]  # gold link files, in order of preference
    all_gold: bool = False  # read every one present (train / test splits) and take the union


FORMATS = {
    "dbp15k": Layout(("ill_ent_ids", "ref_ent_ids")),
    # the id-converted OpenEA layout (EVA / MCLEA); OpenEA's own URI layout: OPENEA_LINKS
    "openea": Layout(("ref_ent_ids", "ill_ent_ids")),
    # MMKB FB15K-DB15K / FB15K-YAGO15K converted to the DBP15K layout by MCLEA / MEAformer
    "mmkb": Layout(("ill_ent_ids",)),
    # DWY100K as BootEA ships it: 70 % test links in ref_ent_ids, 30 % seeds in sup_ent_ids
    "dwy100k": Layout(("ref_ent_ids", "sup_ent_ids", "ill_ent_ids"), all_gold=True),
}
# OpenEA's URI layout (rel_triples_1/2, attr_triples_1/2): all links, then the 5 folds' splits
OPENEA_LINKS = ("ent_links", *(f"721_5fold/{k}/{part}_links" for k in range(1, 6)
                               for part in ("train", "valid", "test")))
# MCLEA's converter writes the MMKB image features next to the pair as <folder>_id_img_feature_dict.pkl
MMKB_IMAGES = "{folder}_id_img_feature_dict.pkl"
