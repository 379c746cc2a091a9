"""``python -m split_infer.tools.cli``: the ``split-infer`` console script."""

import sys

from split_infer.tools.cli import main

sys.exit(main())
