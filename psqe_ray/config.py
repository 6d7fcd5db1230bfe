"""Typed, frozen configuration per stage; YAML in, fingerprint out.

Every hyperparameter of the PSQE paper is a field here with the paper's default (section 6.1.3
and the reference behaviour in ``shared/PSQE.md``); fields the paper does not have are marked
*ours* in their comment.  A configuration is built from defaults, then a YAML file, then
``--set section.key=value`` overrides, in that order::

    cfg = load_config("psqe.yaml", ["stage2.epochs=100", "stage1.budget=2000"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any, get_type_hints

from psqe_ray.errors import ConfigError


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able object (dataclasses allowed): same config, same id."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _default_weights() -> dict[str, float]:
    # Paper: image 0.8, relation 0.1, attribute 0.1.  Names play the image's role when there is
    # no image (ours: our benchmark pairs have no images), so they get the same weight.
    return {"image": 0.8, "name": 0.8, "relation": 0.1, "attribute": 0.1}


@dataclass(frozen=True)
class FeatureConfig:
    """How modality features are built from a dataset (section 4.1.1)."""

    relation_top: int = 1000      # bag of the most frequent relations (EVA/MCLEA loaders: 1000)
    attribute_top: int = 1000     # bag of the most frequent attributes (same)
    name_dim: int = 1024          # ours: hashed character n-gram dimension
    name_ngram_min: int = 2       # ours
    name_ngram_max: int = 3       # ours
    fill_missing: bool = True     # paper: missing image -> N(mean, std) of the present ones
    signal_test: bool = True      # ours: drop a modality with no signal shared by both graphs
                                  # (psqe_ray.core.signal; no gold link read)
    centre_text: bool = True      # ours: a text model's vectors (name / relation / attribute
                                  # feature tables) lose their graph's mean before normalising


@dataclass(frozen=True)
class Stage1Config:
    """Multimodal fusion and cluster sampling (section 4.1)."""

    budget: int = 1000            # paper: 1000 seeds on DBP15K (5000 on DWY15K); 0 = by size:
    #                               max(1000, smaller side / 20), the paper's DBP15K share
    clusters: int = 5             # paper: K in 2..5, reference default 5
    max_cluster_size: int = 20000  # ours: K = max(clusters, ceil(N / this)): bounded clusters
    kmeans_iters: int = 20        # ours (faiss default)
    similarity: str = "fused"     # "fused" or "relation_attribute" (the reference code's choice)
    candidates: int = 10          # ours: per-left top-k candidates inside a cluster


@dataclass(frozen=True)
class Stage2Config:
    """Contrastive fine-tuning, global sampling, correction (section 4.2)."""

    epochs: int = 300             # paper
    lr: float = 0.01              # paper
    batch_size: int = 2000        # paper
    dim: int = 300                # paper
    temperature: float = 1.0      # reference code
    normalize: bool = False       # reference code: no L2 normalisation inside the loss
    weight_decay: float = 0.01    # AdamW default, as in the reference
    gat_layers: int = 2           # paper
    gat_heads: int = 1            # ours
    fanout: tuple[int, ...] = (10, 5)  # ours: sampled neighbours per hop (memory and CPU bound)
    anchor: str = "auto"          # modality under the GAT: image in the paper; auto = image,
    #                               else name, else relation
    global_budget: int = 0        # 0 = same as stage1.budget (reference)
    candidates: int = 10          # ours: per-left top-k for global sampling
    mic: bool = True              # multimodal information correction (4.2.2)


@dataclass(frozen=True)
class Stage3Config:
    """Neighbourhood expansion and recheck (section 4.3)."""

    enabled: bool = True
    threshold_start: float = 0.80  # paper: 0.8; reference rises to 0.9 along the seed list
    threshold_end: float = 0.90
    candidates_start: int = 6     # reference: per-seed candidate count falls from 6 ...
    candidates_end: int = 3       # ... to 3
    recheck: bool = True          # MIC again over the expanded set (4.3.2)
    spread: str = "off"           # ours: degree = each side's log2 degree buckets keep their
                                  # entity share of the seed list (quotas); off = the paper's
                                  # walk (default: the quotas only cut seeds, README deviation 15)


@dataclass(frozen=True)
class EncodeConfig:
    """Model-based features, computed before the seeds (ours; the paper's encoders).

    A modality with a model set here is encoded into ``features/<modality>`` of the dataset
    before seed generation (skipped when the same settings already produced it).
    """

    name_model: str = "auto"      # transformers model dir / URL / "minilm" / "me5"; "" = not
                                  # encoded (hashed n-grams); auto = "me5" when the `models`
                                  # extra is installed, else ""
    relation_model: str = "auto"  # same, over relation names
    attribute_model: str = "auto"  # same, over attribute names (and values, see below)
    attribute_values: bool = False  # attribute text = "name value" instead of the name alone
    pooling: str = "auto"         # mean | cls | auto (as the model directory declares)
    max_length: int = 64          # tokens per text
    text_batch_size: int = 256    # texts per forward pass
    image_arch: str = ""          # torchvision ResNet, e.g. resnet152 (paper); "" = not encoded
    image_weights: str = ""       # state dict / checkpoint path or URL (never a hub download)
    image_size: int = 224         # centre crop after resizing the short side to 256/224 of it
    image_batch_size: int = 32    # images per forward pass
    image_timeout: float = 30.0   # seconds to connect to / wait for bytes from an image URL
                                  # (http, s3); a slower image counts as unreadable
    workers: int = 0              # encoder actors; 0 = one per GPU, else cores / 2
    device: str = "auto"          # auto | cpu | cuda

    def model_for(self, modality: str) -> str:
        """The model that encodes ``modality`` ("" = none), ``auto`` resolved."""
        model = self.configured(modality)
        if model == "auto":
            from psqe_ray.encoders.text import engine_installed
            model = "me5" if engine_installed("me5") else ""
        return model

    def configured(self, modality: str) -> str:
        """The setting as written (``auto`` unresolved)."""
        return {"name": self.name_model, "relation": self.relation_model,
                "attribute": self.attribute_model, "image": self.image_arch}.get(modality, "")


@dataclass(frozen=True)
class SearchConfig:
    """The one search layer behind every top-k (``psqe_ray.core.search``; ours).  The plan
    depends on the base size only, never on the machine: exact blocked search up to
    ``exact_below`` base rows, FAISS IVF above it (nlist / nprobe by the rule in the README)."""

    exact_below: int = 50000      # base rows searched exactly at or below this
    index: str = "auto"           # auto (exact, then IVF above exact_below) | flat | ivf
    nlist: int = 0                # ivf lists per shard; 0 = round(4 sqrt(rows)), >= 39 rows each
    nprobe: int = 0               # ivf lists probed; 0 = nlist / 8, <= ~16K rows (README)
    shard_rows: int = 1000000     # ivf: rows per index shard (one task each on Ray)
    depth: int = 50               # evaluation above exact_below: candidates ranked per query


@dataclass(frozen=True)
class DistributedConfig:
    """How the Ray path spreads the work (ours).  ``train_workers`` > 1, ``chunk_rows`` and
    ``device`` change the results (as does the top-level ``threads``); everything else changes
    where and how fast they are computed (:func:`reproducibility`)."""

    train_workers: int = 1        # Ray Train workers for Stage II (data parallel, all-reduce)
    train_cpus: float = 1.0       # CPUs each training worker asks for
    shards: int = 0               # exact search: base shards (actors) per side; 0 = one per CPU
    device: str = "auto"          # auto (cuda when the cluster has GPUs) | cpu | cuda
    partitions: int = 0           # seed-table partitions for MIC / Stage III; 0 = auto
    block_rows: int = 65536       # rows per block of the partitioned vectors (rounded up to
                                  # whole chunks); the seeds do not depend on it
    chunk_rows: int = 4096        # the unit of random fills and exact sums over blocks: the
                                  # seeds depend on it (not on block_rows, nor on the cluster)
    checkpoint_every: int = 100   # Stage II epochs between checkpoints (and one at the end)
    max_failures: int = 2         # Ray Train: restarts of the training workers after one is
                                  # lost (a node, a killed process); each resumes from the
                                  # latest checkpoint, so the result is the same


RECIPES = ("eva", "mclea", "meaformer", "pcmea")
RANKINGS = ("balanced", "csls", "plain")  # align.ranking (alignment.parquet, headline Hits@k)


@dataclass(frozen=True)
class AlignConfig:
    """The downstream aligner trained on the seeds (``psqe_ray.align``; ours unless marked).

    The recipes' papers train 500-1000 full-graph epochs on a GPU; here a step is a batch of
    seed pairs over sampled neighbourhoods, and the defaults are sized so one recipe trains and
    evaluates on a 20k-entity pair within minutes on two CPU cores.
    """

    recipe: str = "pcmea"         # eva | mclea | meaformer | pcmea
    dim: int = 128                # per-branch width (EVA / MCLEA / MEAformer: 300; CPU budget)
    epochs: int = 30              # epochs on the seeds before the first iterative round
    round_epochs: int = 5         # epochs after each iterative round
    rounds: int = -1              # iterative rounds; -1 = the recipe's default (0 for mclea)
    match_rounds: int = 1         # ours: rounds after those whose check is the one-to-one
                                  # assignment on the final vectors (smoothing, Sinkhorn, as
                                  # matches.parquet): its matches become the training pairs
    lr: float = 0.005             # AdamW
    weight_decay: float = 0.01
    batch_size: int = 1024        # seed pairs per step (in-batch negatives)
    epoch_pairs: int = 32768      # ours: pairs one epoch visits at most (0: all); above it
                                  # each epoch is a fresh seeded sample, so the steps per epoch
                                  # stop growing with the graph (README "The aligner")
    temperature: float = 0.1      # ICL temperature (MCLEA / MEAformer)
    structure: str = "auto"       # the structure GAT's input: features (a fixed projection
                                  # of the entity's features) | free (EVA's learned embedding)
                                  # | init (free, started at the projection) | auto (free when
                                  # the seeds pair >= 20 % of the smaller side, else features)
    gat_layers: int = 2           # GAT layers of the structure branch
    fanout: tuple[int, ...] = (10, 5)  # sampled neighbours per hop while training
    momentum: float = 0.99        # pcmea: EMA rate of the target encoder
    smooth: int = -1              # ours (SEU's propagation): hops of neighbourhood means
                                  # appended to the trained joint vectors, no training
                                  # (psqe_ray/core/smoothing.py); -1 = auto (0-3 hops, the
                                  # count with the most mutual nearest pairs; no gold read);
                                  # 0 = off.  The final vectors are (hops + 1) times wider
    topk: int = 10                # candidates per left entity in alignment.parquet
    ranking: str = "balanced"     # ours: the scoring of alignment.parquet and of
                                  # metrics.json's headline Hits@k: balanced (the assignment's
                                  # Sinkhorn mass on the candidate graph, as matches.parquet)
                                  # | csls (hubness-corrected cosine) | plain (cosine)
    matching: str = "sinkhorn"    # ours: the one-to-one matches.parquet: sinkhorn (balanced
                                  # on the candidate graph) | greedy (mutual best on CSLS) | off
    match_k: int = 50             # candidates per entity, each direction, of that assignment
                                  # (the sparse graph approximates the dense balancing)
    match_temperature: float = 0.04  # Sinkhorn temperature on CSLS scores (0.02 on cosines)
    match_iterations: int = 10    # Sinkhorn rounds (row + column normalisation each)
    match_min_share: float = 0.5  # a match is kept when its balanced mass is at least this
    csls_k: int = 3               # CSLS neighbourhood of the ranking, the matching and the
                                  # evaluation (field: 3)
    split_seed: int = 0           # evaluation: seed of the field's 30 / 70 split
    checkpoint_every: int = 10    # ours: epochs between the aligner's checkpoints (and one
                                  # after each round's check) under OUT_URL/_train; no effect
                                  # on the result


@dataclass(frozen=True)
class PSQEConfig:
    """Everything a seed run needs; ``fingerprint(cfg)`` identifies its output."""

    method: str = "psqe"          # psqe | uvp | multimodal-greedy
    modalities: tuple[str, ...] = ("image", "name", "relation", "attribute")
    uvp_modality: str = "auto"    # UVP's pivot: image when present, else name
    weights: dict[str, float] = field(default_factory=_default_weights)
    seed: int = 42                # paper: random seed 42
    features: FeatureConfig = field(default_factory=FeatureConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    stage3: Stage3Config = field(default_factory=Stage3Config)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    threads: int = 2              # torch threads of every training process (Stage II, the
                                  # aligner; in-process and each Ray Train worker).  Some CPU
                                  # kernels' sums depend on the thread count, so it is fixed
                                  # (not the machine's cores) and part of the result: the same
                                  # value gives the same seeds and alignment on any machine,
                                  # under any load.  2: the smallest machine we support (more
                                  # threads than cores cost ~30 %).  0 = the node's CPUs (not
                                  # reproducible)

    def check(self) -> None:
        if self.method not in ("psqe", "uvp", "multimodal-greedy"):
            raise ConfigError(f"method must be psqe, uvp or multimodal-greedy, got {self.method!r}")
        if self.stage1.similarity not in ("fused", "relation_attribute"):
            raise ConfigError("stage1.similarity must be 'fused' or 'relation_attribute'")
        if self.stage3.spread not in ("degree", "off"):
            raise ConfigError(f"stage3.spread must be degree or off, got {self.stage3.spread!r}")
        if self.threads < 0:
            raise ConfigError("threads must be >= 0 (0: the node's CPUs)")
        if self.stage1.budget < 0:
            raise ConfigError("stage1.budget must be >= 0 (0: by the graphs' size)")
        for name, w in self.weights.items():
            if w < 0:
                raise ConfigError(f"weights.{name} must be >= 0")
        if not self.modalities:
            raise ConfigError("at least one modality is required")
        if not self.encode.image_timeout > 0:
            raise ConfigError("encode.image_timeout must be > 0 seconds")
        if self.encode.pooling not in ("auto", "mean", "cls"):
            raise ConfigError("encode.pooling must be auto, mean or cls")
        d = self.distributed
        if d.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"distributed.device must be auto, cpu or cuda, got {d.device!r}")
        if d.train_workers < 1 or d.train_cpus <= 0 or d.shards < 0 or d.partitions < 0 \
                or min(d.block_rows, d.chunk_rows) < 1 or d.checkpoint_every < 1 \
                or d.max_failures < 0:
            raise ConfigError("distributed: train_workers, checkpoint_every must be >= 1, "
                              "train_cpus > 0, block_rows / chunk_rows >= 1, shards / "
                              "partitions / max_failures >= 0")
        s = self.search
        if s.index not in ("auto", "flat", "ivf"):
            raise ConfigError(f"search.index must be auto, flat or ivf, got {s.index!r}")
        if min(s.exact_below, s.nlist, s.nprobe) < 0 or s.shard_rows < 1 or s.depth < 1:
            raise ConfigError("search: exact_below, nlist, nprobe >= 0; shard_rows, depth >= 1")
        a = self.align
        if a.recipe not in RECIPES:
            raise ConfigError(f"align.recipe must be one of {', '.join(RECIPES)}, got {a.recipe!r}")
        if a.structure not in ("auto", "features", "free", "init"):
            raise ConfigError("align.structure must be auto, features, free or init, "
                              f"got {a.structure!r}")
        if min(a.dim, a.batch_size, a.topk, a.gat_layers) < 1 or a.epochs < 0 \
                or a.epoch_pairs < 0 or a.round_epochs < 0 or a.rounds < -1 or a.match_rounds < 0 or a.temperature <= 0 or a.csls_k < 0 \
                or not 0.0 <= a.momentum < 1.0 or a.lr <= 0:
            raise ConfigError("align: dim, batch_size, topk, gat_layers >= 1; epochs, "
                              "epoch_pairs, round_epochs, match_rounds, csls_k >= 0; rounds >= -1; temperature, lr > 0; "
                              "0 <= momentum < 1")
        if a.smooth < -1:
            raise ConfigError(f"align.smooth must be -1 (auto) or >= 0 hops, got {a.smooth}")
        if a.checkpoint_every < 1:
            raise ConfigError("align.checkpoint_every must be >= 1")
        if a.ranking not in RANKINGS:
            raise ConfigError(f"align.ranking must be {', '.join(RANKINGS)}, got {a.ranking!r}")
        if a.matching not in ("sinkhorn", "greedy", "off"):
            raise ConfigError(f"align.matching must be sinkhorn, greedy or off, got {a.matching!r}")
        if a.match_k < 1 or a.match_iterations < 1 or a.match_temperature <= 0 \
                or not 0.0 <= a.match_min_share <= 1.0:
            raise ConfigError("align: match_k, match_iterations >= 1; match_temperature > 0; "
                              "0 <= match_min_share <= 1")
        if self.encode.device not in ("auto", "cpu", "cuda") and not self.encode.device.startswith("cuda:"):
            raise ConfigError("encode.device must be auto, cpu or cuda[:N]")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a YAML / command-line value to the field's type."""
    origin = getattr(typ, "__origin__", None)
    try:
        if typ is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if typ in (int, float, str):
            if typ is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return typ(value)
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            inner = typ.__args__[0]
            return tuple(_coerce(v.strip() if isinstance(v, str) else v, inner, key)
                         for v in items if not (isinstance(v, str) and not v.strip()))
        if origin is dict:
            if isinstance(value, str):
                pairs = [p.split(":", 1) for p in value.split(",") if p.strip()]
                value = {k.strip(): v for k, v in pairs}
            return {str(k): float(v) for k, v in dict(value).items()}
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot read {value!r} as {getattr(typ, '__name__', typ)}") from None
    return value


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> Any:
    hints = get_type_hints(type(obj))
    known = {f.name for f in fields(obj)}
    changes = {}
    for key, value in updates.items():
        if key not in known:
            raise ConfigError(f"unknown configuration key {prefix}{key!r} (known: "
                              f"{', '.join(sorted(known))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} is a section; give it a mapping")
            changes[key] = _apply(current, value, f"{prefix}{key}.")
        else:
            changes[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return replace(obj, **changes)


def nest(settings: dict[str, Any] | None) -> dict[str, Any]:
    """Dotted keys -> nested dict: ``{"stage2.epochs": 100, "seed": 1}`` ->
    ``{"stage2": {"epochs": 100}, "seed": 1}``."""
    out: dict[str, Any] = {}
    for key, value in (settings or {}).items():
        node, parts = out, str(key).strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {p} is set both as a value and as a section")
        node[parts[-1]] = value
    return out


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["stage2.epochs=100", "seed=1"]`` -> nested dict."""
    pairs = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        pairs[key] = value.strip()
    return nest(pairs)


def load_config(yaml_text_or_none: str | None = None, sets: list[str] | None = None,
                settings: dict[str, Any] | None = None, **overrides: Any) -> PSQEConfig:
    """Defaults <- YAML text (already read) <- ``--set`` items <- ``settings`` (dotted keys
    to values, :func:`nest`) <- keyword overrides."""
    cfg = PSQEConfig()
    if yaml_text_or_none:
        import yaml

        try:
            data = yaml.safe_load(yaml_text_or_none) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(data, dict):
            raise ConfigError("config YAML must be a mapping")
        cfg = _apply(cfg, data)
    cfg = _apply(cfg, parse_sets(sets))
    cfg = _apply(cfg, nest(settings))
    cfg = _apply(cfg, {k: v for k, v in overrides.items() if v is not None})
    cfg.check()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def seed_settings(cfg: PSQEConfig) -> dict[str, Any]:
    """The configuration that decides the seeds (the aligner's section left out, so changing
    an aligner knob never invalidates committed seeds)."""
    return {k: v for k, v in to_dict(cfg).items() if k != "align"}


def reproducibility(cfg: PSQEConfig) -> dict[str, Any]:
    """What a run's result depends on besides the data (written into report.json and
    metrics.json): the settings that change the result, those that only change where and how
    fast it is computed, and whether the same settings give the same bits on another machine."""
    d = cfg.distributed
    anywhere = cfg.threads > 0
    return {
        "same_result_anywhere": anywhere,
        "result_settings": {"seed": cfg.seed, "threads": cfg.threads,
                            "distributed.train_workers": d.train_workers,
                            "distributed.chunk_rows": d.chunk_rows,
                            "distributed.device": d.device},
        "no_effect": ["PSQE_RAY_NUM_CPUS", "the machine's cores and load", "in-process or Ray",
                      "the number of Ray nodes", "distributed.block_rows",
                      "distributed.partitions", "distributed.shards",
                      "distributed.train_cpus", "distributed.max_failures",
                      "distributed.checkpoint_every", "align.checkpoint_every"],
        "note": ("the same dataset and result settings give byte-identical seeds and alignment "
                 "on CPU; a GPU computes other floats, so cuda and cpu runs may differ slightly"
                 if anywhere else
                 "threads=0 trains with as many torch threads as the node has CPUs: some CPU "
                 "sums depend on the thread count, so results can differ between machines"),
    }
