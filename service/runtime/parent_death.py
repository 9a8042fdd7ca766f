"""The processes of ``triage serve`` end with it, even when it is killed with SIGKILL.

The supervisor stops its children itself on SIGTERM; killed outright it cannot, and its HTTP processes would go on
holding the port, its workers (which ignore SIGTERM) would go on waiting for requests. Linux's
``prctl(PR_SET_PDEATHSIG)`` has the kernel send a child SIGKILL when its parent exits: forked children (HTTP
processes, LitServe's queue manager) ask for it right after the fork, spawned inference workers when they set up.
The kernel watches the thread that started the child, so the supervisor starts them all from its main thread.
Elsewhere (no ``prctl``) nothing changes. The same module tells whether a process still exists, which is how the
supervisor finds the files of services killed this way (``process_alive``, ``owner_pid``,
``sweep_dirs_of_dead_owners``).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this process when ``parent_pid``, its parent, exits (exit now if it already has).
    Returns False where the system offers no such thing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
    return True


def forked_children_die_with_this_process() -> None:
    """From now on, every child this process forks dies with it (a grandchild forked by a child is left alone)."""
    parent = os.getpid()

    def after_fork_in_child() -> None:
        if os.getppid() == parent:
            die_with_parent(parent)

    os.register_at_fork(after_in_child=after_fork_in_child)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_pid(name: str, prefix: str) -> int | None:
    """The process id in ``<prefix><pid>-...``, or None when the name is not of that form."""
    head = name[len(prefix) :].split("-", 1)[0] if name.startswith(prefix) else ""
    return int(head) if head.isdigit() else None


def sweep_dirs_of_dead_owners(base: Path, prefix: str) -> int:
    """Remove the folders ``<prefix><pid>-...`` in ``base`` whose process no longer exists; returns how many."""
    removed = 0
    for path in base.glob(f"{prefix}*"):
        pid = owner_pid(path.name, prefix)
        if path.is_dir() and pid is not None and not process_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
