from __future__ import annotations

import sys

from iofogd.daemon import main

sys.exit(main())
