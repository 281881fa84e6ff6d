"""``python -m ebm_lfi.cli``: the ``ebm-lfi`` command line."""

from . import main

raise SystemExit(main())
