"""VLP's decoding entry point: `python -m vlp.decode_img2txt` takes VLP's flags."""

import sys

from vlp.decode.run import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m vlp.decode_img2txt"))
