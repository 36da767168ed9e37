"""A stand-in for llama.cpp's ``llama-server`` that the matrix command can start: it takes
llama-server's flags, serves the simulator's API (its ``--parallel`` as the batch size)
and ``/health``, and stops on SIGTERM.

    python fake_llama_server.py --model M --host 127.0.0.1 --port P [--parallel K] ...
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from llmvariance.testing import SimServer


class _WithHealth(SimServer):
    def _app(self) -> web.Application:
        app = super()._app()

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app.router.add_get("/health", health)
        return app


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--parallel", type=int, default=1)
    args, _ = parser.parse_known_args()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with _WithHealth(host=args.host, port=args.port, step_time_s=0.001,
                           max_batch=args.parallel):
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
