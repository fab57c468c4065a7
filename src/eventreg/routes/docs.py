"""GET /docs: the API reference, Swagger UI rendering /openapi.json, served entirely by us.

Swagger UI's files come from the flask-swagger-ui package, which ships the upstream build
(its version is Swagger UI's); only its `dist/` folder is read, Flask is never imported.
Nothing is fetched from anywhere else, so the page works without internet access. The
page and its files are public and outside the API: not in /openapi.json, no token read.
URLs are relative, so the page also works below a proxy's path prefix.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventreg.errors import NotFound

PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>eventreg API reference</title>
<link rel="icon" type="image/png" href="docs/favicon-32x32.png">
<link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script src="docs/start.js"></script>
</body>
</html>
"""

# Started from a file rather than inline, so the page's policy can forbid inline scripts.
START = b"""window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  docExpansion: "list",
  defaultModelsExpandDepth: 0,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
});
"""

# Swagger UI sets style attributes, hence 'unsafe-inline' for styles; scripts are ours only.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'"
)
ASSETS = {  # name -> media type; nothing else is served below /docs/
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "start.js": "text/javascript",
}


def swagger_ui_dir() -> Path:
    spec = importlib.util.find_spec("flask_swagger_ui")  # locates it without importing it
    if spec is None or spec.origin is None:
        raise RuntimeError("flask-swagger-ui is not installed; run `make install`")
    return Path(spec.origin).parent / "dist"


@cache
def asset(name: str) -> bytes:
    """An asset's bytes, read on first use and kept (about 2 MB in all)."""
    return START if name == "start.js" else (swagger_ui_dir() / name).read_bytes()


async def page(_: Request) -> Response:
    headers = {"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"}
    return Response(PAGE, media_type="text/html; charset=utf-8", headers=headers)


async def file(request: Request) -> Response:
    name = request.path_params["asset"]
    media = ASSETS.get(name)
    if media is None:
        raise NotFound(f"no such file: /docs/{name}")
    headers = {"Cache-Control": "public, max-age=86400"}
    return Response(asset(name), media_type=media, headers=headers)


ROUTES = [
    Route("/docs", page, methods=["GET"], name="/docs"),
    Route("/docs/{asset}", file, methods=["GET"], name="/docs/{asset}"),
]
