"""``headend cluster status`` outside a cluster and on bad input (its view of a running cluster is
checked in test_cluster_daemons.py)."""

from __future__ import annotations

from tests.support import cli


def test_status_without_members_says_so_and_bad_input_is_one_line(pg_dsn: str) -> None:
    empty = cli.headend("cluster", "status", "--dsn", pg_dsn)
    assert empty.returncode == 0, empty.stderr
    said = "no cluster members: [cluster] is not enabled on any daemon of this database"
    assert empty.stdout.strip() == said
    bad = cli.headend("cluster", "status", "--soon", "-1", "--dsn", pg_dsn)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --soon: between 0 and 86400 s, got -1"
    assert "Traceback" not in bad.stderr
