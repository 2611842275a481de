"""The status page's template engine: Jinja2 through aiohttp-jinja2, autoescape always on.

Package names, site names and error lines come from torrents and from PCs' reports, so every
value a template prints is HTML-escaped (markup in a site's name stays text), and a value put
in a URL path goes through ``path`` (percent-escaped, ``/`` included). The templates and the
stylesheet are package data (``p2pdist/tracker/templates``); the stylesheet is inlined into
each page, so the server serves no static files. Only the site server imports this module.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from p2pdist.tracker import pages

FILTERS = {
    "size": pages.human_size,
    "percent": pages.percent,
    "day": pages.day,
    "when": pages.when,
    "path": lambda text: quote(str(text), safe=""),
}


def _configure(environment: jinja2.Environment) -> jinja2.Environment:
    environment.filters.update(FILTERS)
    environment.globals.update(fix_for=pages.fix_for)
    return environment


def _options() -> dict[str, Any]:
    return {
        "loader": jinja2.PackageLoader("p2pdist.tracker", "templates"),
        "autoescape": True,  # every template, whatever its name
        "undefined": jinja2.StrictUndefined,  # a misspelt field is an error in the tests, not a blank cell
        "trim_blocks": True,
        "lstrip_blocks": True,
    }


def environment() -> jinja2.Environment:
    """The engine on its own, as the server configures it (for rendering without a server)."""
    return _configure(jinja2.Environment(**_options()))


def setup(app: web.Application) -> None:
    """Give ``app`` the engine ``aiohttp_jinja2.render_template`` uses."""
    _configure(aiohttp_jinja2.setup(app, **_options()))


def render(request: web.Request, template: str, context: dict[str, Any], status: int = 200) -> web.Response:
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
