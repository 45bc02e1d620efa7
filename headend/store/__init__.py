"""Storage: the embedded PostgreSQL server, migrations, the reading writer and its on-disk spool."""
