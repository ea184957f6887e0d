"""The admin web page (R6, R7, R8): counters, capacity per node with the threshold, the active
alert, the session report as a bar chart with its CSV downloads, and the per-user table; and the
live state as JSON (status.py): ``/status.json``, ``/sessions.json?user=alice@example.org``.

Served by the component (aiohttp), bound to localhost by default, every request checked against
the token from the config (``?token=`` or ``Authorization: Bearer``). The page is plain HTML with
server-drawn SVG: nothing is loaded from the internet and no script runs.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from .report import Report, summary_csv, users_csv

log = logging.getLogger(__name__)

_templates = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                autoescape=True, undefined=jinja2.StrictUndefined)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


class AdminPage:
    def __init__(self, *, token: str, node: str, report: Callable[[], Awaitable[Report]],
                 counters: Callable[[], dict[str, float]], capacity_counters: Callable[[], dict[str, float]],
                 alert: Callable[[], str | None], status: Callable[[], dict[str, Any]],
                 user_sessions: Callable[[str], dict[str, Any]], host: str = "127.0.0.1", port: int = 0) -> None:
        if not token:
            raise ValueError("the admin page needs a token")
        self._token = token
        self.node, self.host, self.port = node, host, port
        self._report, self._counters, self._capacity, self._alert = report, counters, capacity_counters, alert
        self._status, self._user_sessions = status, user_sessions
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/", self._page)
        app.router.add_get("/report.csv", self._summary_csv)
        app.router.add_get("/nodes/{node}/users.csv", self._users_csv)
        app.router.add_get("/status.json", self._status_json)
        app.router.add_get("/sessions.json", self._sessions_json)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        given = request.query.get("token", "")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[7:]
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            log.warning("admin page: refused %s %s from %s (wrong or missing token)", request.method,
                        request.path, request.remote)
            return web.Response(status=401, text="a valid token is required (?token=… or Authorization: Bearer …)\n")
        return await handler(request)

    async def _page(self, request: web.Request) -> web.Response:
        report = await self._report()
        html = _templates.get_template("admin.html.j2").render(
            node=self.node, report=report, token=self._token, alert=self._alert(),
            mdm_counters={k: _fmt(v) for k, v in self._counters().items()},
            capacity_counters={k: _fmt(v) for k, v in self._capacity().items()})
        return web.Response(text=html, content_type="text/html")

    async def _summary_csv(self, request: web.Request) -> web.Response:
        level = request.query.get("level", "cluster")
        if level not in ("cluster", "sub-cluster", "node"):
            return web.Response(status=400, text="level must be cluster, sub-cluster or node\n")
        return _csv(summary_csv(await self._report(), level), f"mdm-sessions-{level}.csv")

    async def _users_csv(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        report = await self._report()
        if node not in {r.name for r in report.nodes}:
            return web.Response(status=404, text=f"no node {node!r} in the report\n")
        return _csv(users_csv(report, node), f"mdm-users-{node}.csv")

    async def _status_json(self, request: web.Request) -> web.Response:
        return web.json_response(self._status())

    async def _sessions_json(self, request: web.Request) -> web.Response:
        user = request.query.get("user", "")
        if not user or "@" not in user or "/" in user:
            return web.Response(status=400, text="user must be a bare JID, e.g. ?user=alice@example.org\n")
        return web.json_response(self._user_sessions(user))

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]  # the port chosen when 0 was asked
        log.info("admin page on http://%s:%s/ (token required)", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _csv(text: str, filename: str) -> web.Response:
    return web.Response(text=text, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
