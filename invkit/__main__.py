import sys

from invkit.cli import main

sys.exit(main())
