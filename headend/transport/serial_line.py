"""The parity a serial device is opened with.

A pseudo-terminal moves bytes, not characters on a wire: Linux's pty driver clears ``PARENB`` (and
forces 8 data bits) on every settings change, and the C library then reports a change that asked for
nothing else (the same speed, even parity again) as ``EINVAL``. So a pty — a simulator's port, or a
tool that bridges one — is opened without parity; a real serial port keeps the parity it is given.
"""

from __future__ import annotations

import os
import stat

PTY_SLAVE_MAJORS = range(136, 144)  # Linux UNIX98 pty slaves (/dev/pts/N)


def is_pty(path: str) -> bool:
    """True if ``path`` is the slave side of a pseudo-terminal."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_SLAVE_MAJORS


def open_parity(path: str, parity: str) -> str:
    """``parity`` for a real serial port; ``"N"`` for a pty, which cannot carry a parity bit."""
    return "N" if is_pty(path) else parity
