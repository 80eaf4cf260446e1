"""`python3 -m sdmail.cleanup`: the cleanup service (sdmail/cleanup/service.py)."""

import sys

from sdmail.cleanup.service import main

sys.exit(main())
