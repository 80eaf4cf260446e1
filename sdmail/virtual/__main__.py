import sys

from sdmail.virtual.service import main

sys.exit(main())
