"""``headend demo``: simulated buses, the daemon on an embedded database, a dashboard, fee control."""
