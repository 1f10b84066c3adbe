import sys

from melissa.monitor.cli import main

sys.exit(main())
