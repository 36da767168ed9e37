"""The watchdog between ``ServerProcess`` and a server: it holds every process the server starts.

    python -I _reaper.py PARENT_PID GRACE_S -- ARGV...

Run by path with the standard library only (it never imports llmvariance), in a session
of its own. On Linux it makes itself a *child subreaper* (``PR_SET_CHILD_SUBREAPER``):
every process the server starts stays below it — a worker in another process group or
session, a daemon that double-forked — because an orphan is re-parented to the nearest
subreaper instead of to PID 1. It starts ARGV (output to its own stderr, the server's
log; killed by the kernel should this watchdog be SIGKILLed), says ``pid N`` on stdout,
and then waits, without polling, for one of:

- the server's first process exiting: says ``exit CODE`` (``-N`` for signal N), and goes
  on while any other process of the tree is left (a daemon that forked away);
- the tree being gone (no child left: under a subreaper that means no descendant left):
  says ``gone`` and exits;
- ``stop`` or the end of its stdin, SIGTERM, or its parent's death (a pidfd, else its
  parent pid changing): says ``stopping``, sends SIGTERM to every descendant, SIGKILL to
  whatever is left after GRACE_S (repeated until no descendant is left, so a process
  forking as it dies cannot slip through), says ``stopped`` and exits.

Why a subreaper and not a cgroup or pidfds: a cgroup (v2 ``cgroup.kill``) needs a
delegated, writable cgroup tree, which an ordinary user, a container or this project's
own machine (cgroup v1 with a read-only v2 mount) often lacks; pidfds name processes one
by one and cannot see a grandchild that re-parented to PID 1. A subreaper needs no
privilege, and orphans come to it by the kernel's rule. It cannot survive its own
SIGKILL, so the watchdog is a separate process that only an explicit ``kill -9`` of its
pid reaches — not the parent's death, which is what it watches for. Descendants are found
by scanning ``/proc/*/stat`` (this kernel has no ``/proc/PID/task/TID/children``).
Elsewhere than Linux it can only signal the server's process group.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

__all__ = ["descendants", "main"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(option, value, 0, 0, 0)) == 0


def descendants(root: int) -> list[int]:
    """Every process below ``root``, parents before their children, read from
    ``/proc/*/stat`` (empty where there is no ``/proc``)."""
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:  # it exited while we looked
            continue
        # the command name may hold spaces and parentheses: the fields follow the last ')'
        parent = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(name))
    found: list[int] = []
    queue = [root]
    while queue:
        for child in children.get(queue.pop(), ()):
            found.append(child)
            queue.append(child)
    return found


class _Watchdog:
    __slots__ = ("_stdin_open", "grace_s", "leader", "parent", "parent_fd", "stop_asked",
                 "wake")

    def __init__(self, parent: int, grace_s: float) -> None:
        self.parent = parent
        self.grace_s = grace_s
        self.leader = 0
        self.stop_asked = False
        self._stdin_open = True
        self.wake, write_end = os.pipe()
        for fd in (self.wake, write_end):
            os.set_blocking(fd, False)
        # every signal below wakes select(): SIGCHLD when a child (or an orphan
        # re-parented to us) exits, SIGTERM when someone asks us to stop
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        # a terminal's Ctrl-C or hang-up is the parent's to handle; it then tells us
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.parent_fd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.parent_fd = os.pidfd_open(parent)
        if os.getppid() != parent:  # it died before the pidfd could watch it
            self.stop_asked = True

    def _on_term(self, signum: int, frame: object) -> None:
        self.stop_asked = True

    @staticmethod
    def say(line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(1, (line + "\n").encode())

    def start(self, argv: Sequence[str]) -> bool:
        def in_child() -> None:  # pragma: no cover - between fork and exec
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with us, even by SIGKILL
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # ignored dispositions survive exec
            signal.signal(signal.SIGHUP, signal.SIG_DFL)

        try:
            process = subprocess.Popen(  # noqa: S603 - the caller's own server command
                list(argv), stdin=subprocess.DEVNULL, stdout=2, stderr=2,
                process_group=0, preexec_fn=in_child)
        except OSError as exc:
            self.say(f"error {exc.strerror or exc}")
            return False
        self.leader = process.pid
        self.say(f"pid {process.pid}")
        return True

    def reap(self) -> bool:
        """Collect every exited child; False once no child is left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.leader:
                self.say(f"exit {os.waitstatus_to_exitcode(status)}")

    def wait(self, timeout: float | None) -> None:
        """Sleep until a signal, a line on stdin or the parent's death (or ``timeout``)."""
        watched = [self.wake]
        if self._stdin_open:
            watched.append(0)
        if self.parent_fd is not None:
            watched.append(self.parent_fd)
        elif timeout is None:
            timeout = 1.0  # no pidfd: look at our parent pid once a second
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select(watched, [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                os.read(self.wake, 4096)
            if 0 in ready:
                data = os.read(0, 4096)
                if not data:
                    self._stdin_open = False
                if not data or b"stop" in data:
                    self.stop_asked = True
            if self.parent_fd is not None and self.parent_fd in ready:
                self.stop_asked = True
        if os.getppid() != self.parent:
            self.stop_asked = True

    def signal_tree(self, signum: int) -> None:
        """``signum`` to every descendant, once each: a second SIGTERM is "terminate
        now" to some servers (llama.cpp exits 1, skipping its cleanup)."""
        if os.path.isdir("/proc"):
            for pid in descendants(os.getpid()):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)
        elif self.leader:  # no /proc: the server's process group is all we can reach
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.leader, signum)

    def stop(self) -> None:
        self.say("stopping")
        self.signal_tree(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        while self.reap():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.wait(left)
        # again until no child is left: one forked while we looked is caught next round
        while True:
            self.signal_tree(signal.SIGKILL)
            if not self.reap():
                break
            self.wait(0.05)
        self.say("stopped")

    def run(self) -> None:
        while self.reap():
            if self.stop_asked:
                self.stop()
                return
            self.wait(None)
        self.say("gone")


def main(argv: Sequence[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: _reaper.py PARENT_PID GRACE_S -- ARGV...", file=sys.stderr)
        return 2
    parent, grace_s = int(argv[0]), float(argv[1])
    subreaper = _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    watchdog = _Watchdog(parent, grace_s)
    if not subreaper and sys.platform.startswith("linux"):
        print("llmvariance watchdog: cannot become a child subreaper; processes that leave "
              "the server's process group may outlive it", file=sys.stderr, flush=True)
    if not watchdog.start(argv[3:]):
        return 127
    watchdog.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
