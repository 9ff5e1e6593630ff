import sys

from fixeduser.cli import main

sys.exit(main())
