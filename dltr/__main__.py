import sys

from dltr.cli import main

sys.exit(main())
