import sys

from sdmail.smtp.service import main

sys.exit(main(mode="smtp"))
