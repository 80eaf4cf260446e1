"""`python3 -m sdmail.postdrop`: the postdrop daemon (see sdmail.postdrop.service)."""

import sys

from sdmail.postdrop.service import main

sys.exit(main())
