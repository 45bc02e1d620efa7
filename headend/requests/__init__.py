"""Meter requests the desk makes and the daemon answers: on-demand reads (点抄) and re-collections (补抄)."""
