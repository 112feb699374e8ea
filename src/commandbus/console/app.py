"""The console as an ASGI app (Starlette, Jinja2 templates, htmx; no JavaScript build).

``create_app(backend, users, domains=…, managers=…)`` returns a Starlette app: run it
with ``commandbus console`` (uvicorn), or mount it in your own ASGI app
(``Mount("/ops", app=create_app(...))``: every link is relative to where it is mounted).

Pages are rendered on the server with autoescaping on, so payloads and error texts are
shown as text, never as markup. Actions are POST forms with a confirmation (htmx's
``hx-confirm``); each carries the CSRF token and is refused (403) for a viewer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from commandbus.console import charts
from commandbus.console.auth import ConsoleUsers, User
from commandbus.console.service import NEEDS_ATTENTION, ConsoleService
from commandbus.errors import CommandBusError, ValidationError
from commandbus.models import CommandStatus
from commandbus.ports import Backend
from commandbus.process.base import BaseProcessManager
from commandbus.process.models import ProcessStatus

__all__ = ["create_app"]

Page = Callable[[Request, User], Awaitable[Response]]

_env = Environment(
    loader=PackageLoader("commandbus.console", "templates"),
    autoescape=select_autoescape(["html"], default=True),
)
_env.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
_env.filters["seconds"] = charts.fmt_seconds
# Charts are SVG built (and escaped) by commandbus.console.charts: markup, not text.
_env.globals.update(
    throughput_chart=lambda *a: Markup(charts.throughput_chart(*a)),
    latency_chart=lambda *a: Markup(charts.latency_chart(*a)),
    duration_bar=lambda *a: Markup(charts.duration_bar(*a)),
)


def create_app(
    backend: Backend,
    users: ConsoleUsers,
    *,
    domains: Sequence[str] = (),
    managers: Sequence[BaseProcessManager[Any, Any]] = (),
    metrics: Any | None = None,
) -> Starlette:
    """The console for ``domains`` (and the managers' domains) on ``backend``.
    ``metrics``: a ``PrometheusMetrics`` to serve on ``/metrics`` (its gauges sampled on
    each scrape)."""
    service = ConsoleService(backend, domains, managers)
    console = _Console(service, users, metrics)
    page, action = console.page, console.action
    routes = [
        Route("/", page(console.dashboard)),
        Route("/partials/summary", page(console.summary_partial)),
        Route("/partials/activity", page(console.activity_partial)),
        Route("/tsq", page(console.tsq_list)),
        Route("/tsq/bulk-retry", action(console.bulk_retry), methods=["POST"]),
        Route("/tsq/{domain}/{command_id}", page(console.tsq_item)),
        Route("/tsq/{domain}/{command_id}/{verb}", action(console.tsq_act), methods=["POST"]),
        Route("/commands", page(console.commands)),
        Route("/commands/{domain}/{command_id}", page(console.command)),
        Route("/processes", page(console.processes)),
        Route("/processes/{domain}/{process_id}", page(console.process)),
        Route(
            "/processes/{domain}/{process_id}/cancel",
            action(console.cancel_process),
            methods=["POST"],
        ),
        Route(
            "/processes/{domain}/{process_id}/retry-step",
            action(console.retry_step),
            methods=["POST"],
        ),
        Route(
            "/processes/{domain}/{process_id}/complete-step",
            action(console.complete_step),
            methods=["POST"],
        ),
        Route("/parked", page(console.parked)),
        Route("/parked/{domain}/{record_id:int}/replay", action(console.replay), methods=["POST"]),
        Route("/metrics", page(console.metrics_page)),
        Mount("/static", StaticFiles(directory=str(files("commandbus.console") / "static"))),
    ]
    return Starlette(routes=routes)


class _Console:
    def __init__(self, service: ConsoleService, users: ConsoleUsers, metrics: Any) -> None:
        self.service = service
        self.users = users
        self.metrics = metrics

    # -- request plumbing ----------------------------------------------------------------

    def page(self, handler: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            user = self.users.authenticate(request.headers.get("authorization"))
            if user is None:
                return Response(
                    "authentication required",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="commandbus console"'},
                )
            try:
                return await handler(request, user)
            except CommandBusError as exc:
                return self.render(request, user, "error.html", {"error": str(exc)}, 400)

        return endpoint

    def action(self, handler: Page) -> Callable[[Request], Awaitable[Response]]:
        async def checked(request: Request, user: User) -> Response:
            if not user.can_act:
                return self.render(
                    request, user, "error.html", {"error": f"{user.name} may not act"}, 403
                )
            form = await request.form()
            token = request.headers.get("x-csrf-token") or _text(form.get("csrf_token"))
            if not self.users.csrf_ok(user, token):
                return self.render(
                    request, user, "error.html", {"error": "missing or wrong CSRF token"}, 403
                )
            return await handler(request, user)

        return self.page(checked)

    def render(
        self,
        request: Request,
        user: User,
        template: str,
        context: dict[str, Any],
        status_code: int = 200,
    ) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        body = _env.get_template(template).render(
            user=user,
            csrf=self.users.csrf_token(user),
            url=lambda path, **query: root + path + ("?" + urlencode(query) if query else ""),
            domains=self.service.domains,
            notice=request.query_params.get("notice"),
            now=datetime.now(UTC),
            **context,
        )
        return HTMLResponse(body, status_code=status_code)

    def done(self, request: Request, path: str, notice: str, **query: str) -> Response:
        """After an action: back to ``path`` with a notice (htmx follows HX-Redirect)."""
        target = (
            request.scope.get("root_path", "") + path + "?" + urlencode({**query, "notice": notice})
        )
        if request.headers.get("hx-request"):
            return Response(status_code=200, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    # -- pages ---------------------------------------------------------------------------

    async def dashboard(self, request: Request, user: User) -> Response:
        summaries = [await self.service.summary(d) for d in self.service.domains]
        activity = await self.service.activity()
        context = {"summaries": summaries, "activity": activity}
        return self.render(request, user, "dashboard.html", context)

    async def activity_partial(self, request: Request, user: User) -> Response:
        activity = await self.service.activity()
        return self.render(request, user, "_activity.html", {"activity": activity})

    async def summary_partial(self, request: Request, user: User) -> Response:
        summaries = [await self.service.summary(d) for d in self.service.domains]
        return self.render(request, user, "_summary.html", {"summaries": summaries})

    async def tsq_list(self, request: Request, user: User) -> Response:
        q = request.query_params
        domain = self.service.domain(q.get("domain"))
        command_type = q.get("command_type") or None
        page = max(int(q.get("page", "0") or 0), 0)
        items = await self.service.tsq.list_troubleshooting(domain, command_type, 50, page * 50)
        total = await self.service.tsq.count_troubleshooting(domain, command_type)
        context = {
            "domain": domain,
            "command_type": command_type or "",
            "items": items,
            "total": total,
            "page": page,
        }
        return self.render(request, user, "tsq.html", context)

    async def tsq_item(self, request: Request, user: User) -> Response:
        domain, command_id = request.path_params["domain"], request.path_params["command_id"]
        view = await self.service.command(domain, command_id)
        if view is None:
            return self.render(request, user, "error.html", {"error": "no such command"}, 404)
        return self.render(request, user, "tsq_item.html", {"view": view})

    async def commands(self, request: Request, user: User) -> Response:
        q = request.query_params
        domain = self.service.domain(q.get("domain"))
        filters = {
            k: q.get(k, "").strip()
            for k in ("command_id", "command_type", "status", "correlation_id")
        }
        found = await self.service.search_commands(
            domain,
            command_id=filters["command_id"],
            command_type=filters["command_type"],
            status=filters["status"],
            correlation_id=filters["correlation_id"],
        )
        context = {
            "domain": domain,
            "filters": filters,
            "found": found,
            "statuses": [s.value for s in CommandStatus],
        }
        return self.render(request, user, "commands.html", context)

    async def command(self, request: Request, user: User) -> Response:
        domain, command_id = request.path_params["domain"], request.path_params["command_id"]
        view = await self.service.command(domain, command_id)
        if view is None:
            return self.render(request, user, "error.html", {"error": "no such command"}, 404)
        return self.render(request, user, "command.html", {"view": view})

    async def processes(self, request: Request, user: User) -> Response:
        q = request.query_params
        domain = self.service.domain(q.get("domain"))
        status = q.get("status") or ""
        attention = q.get("attention") == "1"
        if attention:
            statuses: Sequence[ProcessStatus] = NEEDS_ATTENTION
        elif status:
            try:
                statuses = [ProcessStatus(status)]
            except ValueError:
                raise ValidationError(f"unknown process status {status!r}") from None
        else:
            statuses = list(ProcessStatus)
        process_type = q.get("process_type") or None
        found = await self.service.processes(domain, statuses, process_type, 200)
        context = {
            "domain": domain,
            "status": status,
            "attention": attention,
            "process_type": process_type or "",
            "found": found,
            "statuses": [s.value for s in ProcessStatus],
        }
        return self.render(request, user, "processes.html", context)

    async def process(self, request: Request, user: User) -> Response:
        domain, pid = request.path_params["domain"], request.path_params["process_id"]
        view = await self.service.process(domain, pid)
        if view is None:
            return self.render(request, user, "error.html", {"error": "no such process"}, 404)
        return self.render(request, user, "process.html", {"view": view, "domain": domain})

    async def parked(self, request: Request, user: User) -> Response:
        domain = self.service.domain(request.query_params.get("domain"))
        records = await self.service.parked(domain)
        return self.render(request, user, "parked.html", {"domain": domain, "records": records})

    async def metrics_page(self, request: Request, user: User) -> Response:
        if self.metrics is None:
            return Response("metrics are off (install commandbus[metrics])", status_code=404)
        await self.metrics.sample(self.service.backend, self.service.domains)
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4")

    # -- actions -------------------------------------------------------------------------

    async def tsq_act(self, request: Request, user: User) -> Response:
        domain, command_id = request.path_params["domain"], request.path_params["command_id"]
        verb = request.path_params["verb"]
        form = await request.form()
        if verb == "retry":
            await self.service.retry(user.name, domain, command_id)
        elif verb == "cancel":
            reason = _text(form.get("reason")) or "canceled by an operator"
            await self.service.cancel(user.name, domain, command_id, reason)
        elif verb == "complete":
            await self.service.complete(
                user.name, domain, command_id, _json_object(_text(form.get("result")))
            )
        else:
            return self.render(request, user, "error.html", {"error": "unknown action"}, 404)
        past = {"retry": "retried", "cancel": "canceled", "complete": "completed"}[verb]
        return self.done(request, f"/commands/{domain}/{command_id}", f"command {past}")

    async def bulk_retry(self, request: Request, user: User) -> Response:
        form = await request.form()
        domain = self.service.domain(_text(form.get("domain")))
        command_type = _text(form.get("command_type")) or None
        retried, skipped = await self.service.bulk_retry(user.name, domain, command_type, 500)
        notice = f"{retried} retried" + (f", {skipped} already resolved" if skipped else "")
        return self.done(request, "/tsq", notice, domain=domain, command_type=command_type or "")

    async def cancel_process(self, request: Request, user: User) -> Response:
        domain, pid = request.path_params["domain"], request.path_params["process_id"]
        form = await request.form()
        reason = _text(form.get("reason")) or "canceled by an operator"
        await self.service.cancel_process(user.name, domain, pid, reason)
        return self.done(request, f"/processes/{domain}/{pid}", "process canceled")

    async def retry_step(self, request: Request, user: User) -> Response:
        domain, pid = request.path_params["domain"], request.path_params["process_id"]
        done = await self.service.retry_step(user.name, domain, pid)
        return self.done(request, f"/processes/{domain}/{pid}", _step_notice("retried", done))

    async def complete_step(self, request: Request, user: User) -> Response:
        domain, pid = request.path_params["domain"], request.path_params["process_id"]
        form = await request.form()
        result = _json_object(_text(form.get("result")))
        done = await self.service.complete_step(user.name, domain, pid, result)
        return self.done(request, f"/processes/{domain}/{pid}", _step_notice("completed", done))

    async def replay(self, request: Request, user: User) -> Response:
        domain, record_id = request.path_params["domain"], request.path_params["record_id"]
        replayed = await self.service.replay(user.name, domain, record_id)
        notice = "message replayed" if replayed else "already replayed by someone else"
        return self.done(request, "/parked", notice)


def _step_notice(past: str, process: Any) -> str:
    step = f" at step {process.current_step}" if process.current_step is not None else ""
    return f"step {past}: the process is {process.status.value}{step}"


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) else None


def _json_object(text: str | None) -> dict[str, Any] | None:
    """The result an operator typed: empty is none; anything else must be a JSON object."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"the result is not valid JSON: {exc.msg} (line {exc.lineno})"
        ) from None
    if not isinstance(value, dict):
        raise ValidationError('the result must be a JSON object, e.g. {"paid": true}')
    return value
