"""Text-to-music sampling: prompts -> WAVs + JSON sidecars + a spectrogram grid (see genflow.cli.sample).

    python recipes/ttm/sample.py --checkpoint runs/ttm-demo/release --prompt "calm piano, 80 bpm" --out samples/ttm
    python recipes/ttm/sample.py --checkpoint runs/ttm-base/release --prompts-file prompts.jsonl \\
        --duration-s 10 --steps 25 --guidance-scale 3 --num-seeds 4 --out samples/ttm
"""

import sys

from genflow.cli.common import run_main
from genflow.cli.sample import main

if __name__ == "__main__":
    sys.exit(run_main(lambda argv: main(argv, description=__doc__), sys.argv[1:]))
