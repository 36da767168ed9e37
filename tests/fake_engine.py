"""A stand-in for an inference server process, for the launcher's tests.

    python fake_engine.py PORT MODE

MODE: ``ok`` serves /health (503 for the first two polls, then 200); ``fail`` prints an
error and exits 3 at once; ``die`` becomes healthy, then exits 4 on its first request to
/v1/die; ``stubborn`` ignores SIGTERM (so only SIGKILL stops it).
"""

from __future__ import annotations

import http.server
import os
import signal
import sys


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    print(f"fake engine pid {os.getpid()} starting in mode {mode}", flush=True)
    if mode == "fail":
        print("error: cannot load model: file is corrupt", flush=True)
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
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


if __name__ == "__main__":
    main()
