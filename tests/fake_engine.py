"""A stand-in for an inference server process, for the launcher's tests.

    python fake_engine.py PORT MODE

MODE: ``ok`` serves /health (503 for the first two polls, then 200); ``fail`` prints an
error and exits 3 at once; ``die`` becomes healthy, then exits 4 on its first request to
/v1/die; ``stubborn`` ignores SIGTERM (so only SIGKILL stops it). Modes that leave
processes behind the way real engines do:

- ``worker-ignores-term``: forks a worker (in its process group) that ignores SIGTERM, as
  vLLM's and SGLang's workers may; the server itself stops on SIGTERM;
- ``stubborn-worker``: forks a worker, and the server itself ignores SIGTERM;
- ``daemon``: double-forks; the daemon (a session of its own) serves, the first process
  exits 0 at once;
- ``session-worker``: forks a worker that starts a session of its own;
- ``never-binds``: waits forever without listening;
- ``hang-health``: listens, accepts, and never answers.

With ``$FAKE_ENGINE_PIDS`` set to a directory, every process it starts (itself included)
creates a file there named by its pid, so a test knows the whole tree.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import sys
from pathlib import Path


def record() -> None:
    folder = os.environ.get("FAKE_ENGINE_PIDS")
    if folder:
        (Path(folder) / str(os.getpid())).touch()


def worker(ignore_term: bool, new_session: bool) -> None:
    """Fork a process that waits forever; return in the parent once it has recorded
    itself (so a test that sees the server healthy knows every pid)."""
    ready, told = os.pipe()
    if os.fork():
        os.close(told)
        os.read(ready, 1)
        os.close(ready)
        return
    if new_session:
        os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_term else signal.SIG_DFL)
    record()
    print(f"worker pid {os.getpid()} waiting", flush=True)
    os.write(told, b"x")
    while True:
        signal.pause()


def serve(port: int) -> None:
    polls = 0

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            nonlocal polls
            polls += 1
            if self.path == "/v1/die":
                print("dying on request", flush=True)
                os._exit(4)
            self.send_response(200 if polls > 2 else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    record()
    print(f"fake engine pid {os.getpid()} starting on port {port} in mode {mode}", flush=True)
    if mode == "fail":
        print("error: cannot load model: file is corrupt", flush=True)
        sys.exit(3)
    if mode in ("stubborn", "stubborn-worker"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "stubborn-worker":
        worker(ignore_term=False, new_session=False)
    if mode == "worker-ignores-term":
        worker(ignore_term=True, new_session=False)
    if mode == "session-worker":
        worker(ignore_term=False, new_session=True)
    if mode == "daemon":
        first = os.fork()
        if first:
            os.waitpid(first, 0)
            print("daemonized", flush=True)
            os._exit(0)
        os.setsid()
        if os.fork():
            os._exit(0)
        record()
    if mode == "never-binds":
        while True:
            signal.pause()
    if mode == "hang-health":
        listener = socket.create_server(("127.0.0.1", port))
        held = []
        while True:  # accept and never answer
            held.append(listener.accept()[0])
    serve(port)


if __name__ == "__main__":
    main()
