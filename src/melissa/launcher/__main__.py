import sys

from melissa.launcher.cli import main

sys.exit(main())
