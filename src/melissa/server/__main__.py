import sys

from melissa.server.cli import main

sys.exit(main())
