"""`python3 -m sdmail.showq`: the showq service (see the package docstring)."""

import sys

from sdmail.showq.service import main

sys.exit(main())
