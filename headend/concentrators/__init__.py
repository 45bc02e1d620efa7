"""Q/GDW 1376.1 concentrators in the daemon: events, archive checks and clocks (``service``)."""
