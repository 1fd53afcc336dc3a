"""The worker-hosted store without a worker: the same request function streams/web.py mounts
(`serve_store_request`) on a small aiohttp server (Faust's web server is aiohttp too), on a
thread of its own, in front of an AsyncStore."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from aiohttp import web

from infra.store import AsyncStore, Store, serve_store_request


class ServedStore:
    """`with ServedStore(store, home) as url:` serves `store` at url until the block ends;
    with worker_json, also writes <home>/worker.json naming it (as the worker announces)."""

    def __init__(self, store: Store, home: Path, *, worker_json: bool = False):
        self.astore = AsyncStore(store)
        self.home = Path(home)
        self.worker_json = worker_json
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        status, body = await serve_store_request(
            self.astore, request.match_info["kind"],
            authorization=request.headers.get("Authorization"), body=await request.read(),
            home=self.home)
        return web.json_response(body, status=status)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/store/{kind}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> str:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)
        if self.worker_json:
            (self.home / "worker.json").write_text(json.dumps({"web_url": self.url}))
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self.worker_json:
            (self.home / "worker.json").unlink(missing_ok=True)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.astore._executor.shutdown()  # the store itself stays open for its owner
