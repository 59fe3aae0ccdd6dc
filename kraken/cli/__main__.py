import sys

from kraken.cli.main import main

sys.exit(main())
