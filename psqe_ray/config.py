"""Typed, frozen configuration per stage; YAML in, fingerprint out."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able object (dataclasses allowed): same config, same id."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
