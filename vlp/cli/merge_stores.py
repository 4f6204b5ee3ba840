"""`vlp merge-stores`: join the stores of `vlp extract --shard` runs into one."""

from __future__ import annotations

from vlp.cli.args import add_command


def register(subparsers) -> None:
    p = add_command(subparsers, "merge-stores", run,
                    help="copy the records of several region stores into one "
                         "(rerun to resume)")
    p.add_argument("out", help="store to create or resume")
    p.add_argument("inputs", nargs="+", help="stores to read (LMDB or HDF5)")
    p.add_argument("--format", choices=("lmdb", "h5"),
                   help="output format (default: h5 for .h5/.hdf5 paths, else lmdb)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from feature_extraction.merge import merge_stores

    report = merge_stores(args.out, args.inputs, format=args.format,
                          progress=not args.quiet)
    print(report.summary())
    return 0
