"""``python -m loadtest.faults``: the fault suite alone."""

import sys

from loadtest.faults import main

sys.exit(main())
