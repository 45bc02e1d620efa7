"""The console script is installed and answers."""

from headend import __version__
from tests.support import cli


def test_version_command_prints_package_version() -> None:
    out = cli.headend("version")
    assert out.returncode == 0 and out.stdout.strip() == __version__
