"""``python -m pyisolate``: the ``pyisolate`` command (see ``_cli``)."""

import sys

from ._cli import main

sys.exit(main())
