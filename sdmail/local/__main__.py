import sys

from sdmail.local.service import main

sys.exit(main())
