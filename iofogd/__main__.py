"""``python -m iofogd``: the daemon. Importing this module starts nothing."""
from __future__ import annotations

import sys

from iofogd.daemon import main

if __name__ == "__main__":
    sys.exit(main())
