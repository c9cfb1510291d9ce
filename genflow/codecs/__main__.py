"""``python -m genflow.codecs reconstruct IN OUT --codec ...``: see ``genflow.cli.codec``."""

import sys

from genflow.cli.codec import main

sys.exit(main())
