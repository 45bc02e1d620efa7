"""CLI command groups; each module exposes ``register(app)`` and is wired up in ``headend.cli``."""
