"""Remote fee control: relay commands as database rows, guarded by one safety policy."""
