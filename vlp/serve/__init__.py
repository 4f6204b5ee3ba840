"""`vlp serve`: a bundle's models behind a web page and a JSON API.

    from vlp.serve import BundleModels, ServeSettings, build_app
    app = build_app(BundleModels(load_bundle("runs/quickstart")), ServeSettings())

`models.py` holds the models (on one thread of their own; pixels in, never a path),
`app.py` the routes, `limits.py` the upload limits, `server.py` the socket and uvicorn,
`static/` the page (plain HTML, CSS and JS).
"""

from vlp.serve.app import ServeSettings, build_app
from vlp.serve.models import BundleModels, Example

__all__ = ["BundleModels", "Example", "ServeSettings", "build_app"]
