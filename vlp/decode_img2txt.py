"""VLP's decoding entry point: `python -m vlp.decode_img2txt` takes VLP's flags."""

import sys

from vlp.cli.decode import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m vlp.decode_img2txt"))
