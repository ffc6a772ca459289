"""``python -m navcuda``: the command line (what ``torchrun ... -m navcuda discover`` runs)."""

from navcuda.cli import main

raise SystemExit(main())
