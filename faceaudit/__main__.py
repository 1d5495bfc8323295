import sys

from faceaudit.cli import main

sys.exit(main())
