"""`vlp score-vqa`: the official VQA accuracy of a results file."""

from __future__ import annotations

from vlp.cli.args import add_command
from vlp.eval.args import add_metric_flag


def register(subparsers) -> None:
    p = add_command(
        subparsers, "score-vqa", run,
        help="official VQA v2 accuracy (overall, per answer type, per question type, per "
             "question) of a results file, as GT-Vision-Lab/VQA's vqaEval.py computes it",
    )
    p.add_argument("results", metavar="RESULTS",
                   help='results JSON: [{"question_id": int, "answer": str}, ...]')
    p.add_argument("questions", metavar="QUESTIONS", help="VQA v2 questions JSON of the split")
    p.add_argument("annotations", metavar="ANNOTATIONS",
                   help="VQA v2 annotations JSON of the split")
    p.add_argument("--out", metavar="METRICS.json",
                   help="write overall, perAnswerType, perQuestionType and perQuestion here")
    add_metric_flag(p)


def run(args) -> int:
    from vlp.eval.vqa_score import score_files, write_metrics

    scores = score_files(args.results, args.questions, args.annotations,
                         metric=args.vqa_metric)
    print(scores.summary())
    if args.out:
        write_metrics(scores, args.out)
        print(f"wrote {args.out} ({len(scores.per_question)} questions)")
    return 0
