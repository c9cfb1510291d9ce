"""``python -m genflow.metrics check [...]``: sanity checks of an evaluation setup (see genflow.metrics.check)."""

import sys

from genflow.metrics.check import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] != "check":
        print("usage: python -m genflow.metrics check [--backend SPEC] [--clap ID_OR_FOLDER] [--device DEV]",
              file=sys.stderr)
        sys.exit(2)
    sys.exit(main(args[1:]))
