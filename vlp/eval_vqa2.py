"""VLP's VQA evaluation entry point: `python -m vlp.eval_vqa2` takes VLP's flags."""

import sys

from vlp.eval.vqa_predict import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m vlp.eval_vqa2"))
