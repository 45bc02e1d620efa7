"""Meter model data files (``config/models/<name>.json``), shared by drivers and simulators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parents[1] / "config" / "models"


class UnknownModel(LookupError):
    """No model data file with that name."""


def model_names() -> list[str]:
    """Names of the bundled model files."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


def load_model_data(name: str) -> dict[str, Any]:
    """The parsed JSON of model ``name`` (a bundled name or a path to a ``.json`` file)."""
    path = Path(name) if name.endswith(".json") else MODELS_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UnknownModel(f"unknown meter model {name!r}; known: {', '.join(model_names())}") from None
