"""``python -m pyfastopt``: same as the ``pyfastopt`` console script."""

from pyfastopt.cli import main

raise SystemExit(main())
