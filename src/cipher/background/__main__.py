"""``python -m cipher.background``: the cipher-background command."""
import sys

from cipher.background.cli import main

sys.exit(main())
