"""VLP's training entry point: `python -m vlp.run_img2txt_dist` takes VLP's flags."""

import sys

from vlp.train.main import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m vlp.run_img2txt_dist"))
