"""`python3 -m sdmail.pickup`: see sdmail/pickup/__init__.py."""

import sys

from sdmail.pickup.service import main

sys.exit(main())
