"""`vlp validate-vqa-submission`: check a VQA challenge results file before upload."""

from __future__ import annotations

import sys

from vlp.cli.args import add_command


def register(subparsers) -> None:
    p = add_command(
        subparsers, "validate-vqa-submission", run,
        help="check a VQA results file for upload: a JSON list answering every question "
             "of QUESTIONS exactly once with a non-empty string",
    )
    p.add_argument("results", metavar="RESULTS", help="results JSON to upload")
    p.add_argument("questions", metavar="QUESTIONS",
                   help="questions JSON of the split (e.g. test-dev2015 or test2015), or its imdb .npy")


def run(args) -> int:
    from vlp.eval.vqa_submission import check_submission

    defects, answers = check_submission(args.results, args.questions)
    if defects:
        for line in defects:
            print(f"vlp validate-vqa-submission: {line}", file=sys.stderr)
        return 2
    print(f"OK: {args.results} answers all {answers} questions of {args.questions} once")
    return 0
