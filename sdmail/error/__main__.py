import sys

from sdmail.error.service import main

sys.exit(main())
