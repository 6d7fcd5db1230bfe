"""Tiny randomly initialised models saved to disk, so tests and benchmarks run the real loading
code (transformers directories, torchvision checkpoints) without any download."""

from __future__ import annotations

import string
from pathlib import Path


def tiny_bert(path: str | Path, *, hidden: int = 32, layers: int = 2, seed: int = 0,
              sentence_transformers: bool = False) -> Path:
    """A 2-layer BERT with a character-level WordPiece vocabulary, saved as a model directory.

    ``sentence_transformers=True`` adds the ``1_Pooling`` / ``modules.json`` files of a
    sentence-transformers directory (CLS pooling, normalised), to exercise ``pooling="auto"``.
    """
    import json

    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=2 * hidden,
                     max_position_embeddings=128)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(path)
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    if sentence_transformers:
        (path / "1_Pooling").mkdir(exist_ok=True)
        (path / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": hidden, "pooling_mode_cls_token": True,
             "pooling_mode_mean_tokens": False}))
        (path / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    return path
