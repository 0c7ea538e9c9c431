import sys

from shardd.cli import main

sys.exit(main())
