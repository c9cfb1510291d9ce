"""Text-to-audio sampling: prompts -> WAVs + JSON sidecars + a spectrogram grid (see genflow.cli.sample).

    python recipes/tta/sample.py --checkpoint runs/tta-demo/release --prompt "a dog barking" --out samples/tta
    python recipes/tta/sample.py --checkpoint runs/tta-base/release --prompts-file prompts.jsonl \\
        --duration-s 10 --steps 25 --guidance-scale 3 --num-seeds 4 --out samples/tta
"""

import sys

from genflow.cli.common import run_main
from genflow.cli.sample import main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(argv, description=__doc__), sys.argv[1:]))
