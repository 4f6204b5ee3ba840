"""VLP's VQA evaluation entry point: `python -m vlp.eval_vqa2` takes VLP's flags."""

import sys

from vlp.cli.eval_vqa import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m vlp.eval_vqa2"))
