"""`vlp serve --bundle DIR`: the bundle's models in a web page and a JSON API."""

from __future__ import annotations

from vlp.cli.args import add_command, int_at_least

DEFAULT_HOST = "127.0.0.1"


def register(subparsers) -> None:
    p = add_command(subparsers, "serve", run,
                    help="serve a bundle's models: a page to caption and ask about any image, "
                    "and a JSON API")
    p.add_argument("--bundle", required=True,
                   help="directory with bundle.json (the output directory of vlp quickstart)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to listen on (this machine only by default; 0.0.0.0 opens it "
                   "to the network)")
    p.add_argument("--port", type=int_at_least(0), default=8000, help="port (0: any free one)")
    p.add_argument("--max_upload_mb", type=float, default=10.0,
                   help="largest upload accepted, in MB")
    p.add_argument("--max_pixels", type=int_at_least(1), default=40_000_000,
                   help="largest image accepted, in pixels (read from the header, before decoding)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def run(args) -> int:
    from vlp.errors import VLPError
    from vlp.serve import ServeSettings
    from vlp.serve.server import run_server

    if not args.max_upload_mb > 0:
        raise VLPError(f"--max_upload_mb {args.max_upload_mb}: must be above 0")
    run_server(args.bundle, args.host, args.port,
               ServeSettings(args.max_upload_mb, args.max_pixels), args.device)
    return 0
