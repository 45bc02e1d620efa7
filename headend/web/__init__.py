"""The web console (``headend web``): server-rendered pages and a JSON API over the same database, run
as the desk login (writes, each bound to the signed-in operator) and the reporting login (reads)."""
