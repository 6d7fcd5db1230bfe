"""The aligner's checkpoint: all it needs to continue a training that was killed.

One file at ``URL`` (any fsspec URL: the job's ``OUT_URL/_train/aligner.ckpt``), replaced
whole at each save (written beside it, then moved over it), so a kill mid-save leaves the
previous checkpoint.  It holds the network, the momentum encoder, the optimiser, every random
stream (torch's, the batch order's and each worker's neighbour sampler's), the training pairs
and where the schedule stands, so a resumed fit takes the very steps the killed one would have
taken.  The ``tag`` (the alignment's fingerprint: dataset, seeds, settings, code version) is
stored with it; a checkpoint of another job is ignored, never resumed from.
"""

from __future__ import annotations

import io
import logging
import secrets

import torch

from psqe_ray.errors import DataError
from psqe_ray.io.fs import StorageOptions, exists, one_line, read_bytes, resolve

log = logging.getLogger(__name__)


class AlignCheckpoint:
    """Where the aligner saves and finds its state.

    Args:
        url: the checkpoint file's URL.
        tag: what the state belongs to; :meth:`load` returns only a state saved with it.
        every: epochs between saves (the aligner also saves after every iterative round's
            check).
        storage_options: fsspec options of ``url``.
    """

    def __init__(self, url: str, tag: str, every: int = 10,
                 storage_options: StorageOptions = None) -> None:
        self.url, self.tag, self.every = url, tag, max(1, int(every))
        self.fs, self.path = resolve(url, storage_options)
        self.saves = 0

    def load(self, device: str = "cpu") -> dict | None:
        """The saved state, or None when there is none (or it belongs to another job)."""
        if not exists(self.fs, self.path, self.url):
            return None
        state = torch.load(io.BytesIO(read_bytes(self.fs, self.path, self.url)),
                           map_location=device, weights_only=False)
        if state.get("tag") != self.tag:
            log.warning("%s: a checkpoint of another alignment (tag %s, this one %s); "
                        "training from the start", self.url, state.get("tag"), self.tag)
            return None
        return state

    def save(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save({**state, "tag": self.tag}, buf)
        tmp = f"{self.path}.tmp-{secrets.token_hex(4)}"
        try:
            self.fs.makedirs(self.fs._parent(self.path), exist_ok=True)
            with self.fs.open(tmp, "wb") as fh:
                fh.write(buf.getvalue())
            self.fs.mv(tmp, self.path)
        except Exception as exc:  # noqa: BLE001 - the store went away: one clear error
            raise DataError(self.url, f"cannot save the checkpoint: {one_line(exc)}") from None
        self.saves += 1

    def clear(self) -> None:
        """Remove the checkpoint and any save a kill cut short (once the alignment it led to
        is committed), then its folder when that is empty."""
        try:
            cut = self.fs.glob(f"{self.path}.tmp-*")
        except (FileNotFoundError, OSError):
            cut = []
        for path in [self.path, *cut]:
            try:
                self.fs.rm_file(path)
            except (FileNotFoundError, OSError):
                pass
        try:
            self.fs.rmdir(self.fs._parent(self.path))
        except (FileNotFoundError, OSError):
            pass


__all__ = ["AlignCheckpoint"]
