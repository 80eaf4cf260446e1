import sys

from sdmail.discard.service import main

sys.exit(main())
