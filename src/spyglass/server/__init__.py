"""``spyglass serve``: the HTTP API and the search page, on top of the engine.

Needs the ``server`` extra (FastAPI, uvicorn, python-multipart); the clusters and the
map also need scikit-learn (the ``eval`` extra).
"""

from spyglass.server.app import create_app
from spyglass.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
