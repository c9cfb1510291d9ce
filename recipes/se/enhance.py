"""Speech enhancement of files and folders with a genflow release; the output folder mirrors the input tree.

    python recipes/se/enhance.py --checkpoint runs/se-demo/release noisy/ extra.flac --out enhanced/
    python recipes/se/enhance.py --checkpoint user/genflow-se noisy/ --out enhanced/ --steps 16 --chunk-s 10

Every option: ``python recipes/se/enhance.py --help`` (the command line is ``genflow.cli.enhance``).
"""

import sys

from genflow.cli.common import run_main
from genflow.cli.enhance import main

if __name__ == "__main__":
    sys.exit(run_main(main, sys.argv[1:]))
