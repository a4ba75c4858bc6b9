"""The API's endpoints, one module per concern; :mod:`spyglass.server.app` mounts them."""
