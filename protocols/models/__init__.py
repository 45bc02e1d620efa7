"""Meter model data files (``protocols/models/<name>.json``): the one loader for drivers and simulators.

The files ship inside the package and are read through :mod:`importlib.resources`, so an installed
wheel finds them wherever it lives.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

MODELS: Traversable = files(__name__)


class UnknownModel(LookupError):
    """No model data file with that name."""


def model_names() -> list[str]:
    """Names of the bundled model files."""
    return sorted(p.name.removesuffix(".json") for p in MODELS.iterdir() if p.name.endswith(".json"))


def load_model_data(name: str) -> dict[str, Any]:
    """The parsed JSON of model ``name``: a bundled name (read once per process) or a ``.json`` path.

    Callers must not mutate the returned mapping: a bundled model's is shared by every caller.
    """
    if name.endswith(".json"):
        return _parse(Path(name), name)
    return _bundled(name)


@lru_cache(maxsize=64)
def _bundled(name: str) -> dict[str, Any]:
    return _parse(MODELS / f"{name}.json", name)


def _parse(source: Traversable, name: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnknownModel(f"unknown meter model {name!r}; known: {', '.join(model_names())}") from None
    return data
