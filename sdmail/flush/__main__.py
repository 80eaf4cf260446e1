"""`python3 -m sdmail.flush`: the fast-flush service (see the package docstring)."""

import sys

from sdmail.flush.service import main

sys.exit(main())
