"""The console script is installed and answers."""

import subprocess
import sys

from headend import __version__


def test_version_command_prints_package_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "headend.cli", "version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == __version__
