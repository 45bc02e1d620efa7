"""The polling engine behind ``headend run``: channel workers, scheduler, backfill, health, clocks.

See :mod:`headend.engine.engine` for the hooks other in-daemon services (fee control) use.
"""
