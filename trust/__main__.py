import sys

from trust.cli import main

sys.exit(main())
