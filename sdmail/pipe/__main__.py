import sys

from sdmail.pipe.service import main

sys.exit(main())
