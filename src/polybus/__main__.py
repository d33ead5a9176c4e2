"""``python -m polybus``: the ``polybus`` command."""

import sys

from polybus._cli import main

sys.exit(main())
