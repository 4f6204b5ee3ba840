"""`vlp serve`'s run: a socket bound before the models load, then uvicorn on it."""

from __future__ import annotations

import socket

from vlp.errors import VLPError


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port (port 0: any free one); VLPError naming the
    flags when the address cannot be used."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise VLPError(f"--host {host}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise VLPError(f"--host {host} --port {port}: {err.strerror or err}") from None
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve(app, sock: socket.socket) -> None:
    """Serve `app` on `sock` until interrupted (uvicorn: one process, its thread pool)."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def run_server(bundle_dir: str, host: str, port: int, settings, device: str = "cpu") -> None:
    """Load the bundle, listen on host:port, print the URL and serve until interrupted."""
    from vlp.bundle import load_bundle
    from vlp.serve.app import build_app
    from vlp.serve.models import BundleModels

    bundle = load_bundle(bundle_dir)
    sock = listen(host, port)  # before loading the models: a busy port fails fast
    app = build_app(BundleModels(bundle, device), settings)
    print(f"vlp serve: {url(sock)} (bundle {bundle_dir}; Ctrl-C stops)", flush=True)
    serve(app, sock)
