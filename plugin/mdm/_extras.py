"""Entry points that need an extra: a one-line hint instead of a traceback when it is missing."""

from __future__ import annotations

import importlib.util
import sys


def harness_main() -> int:
    """``mdm-harness``: the conformance harness needs ``pip install 'open-mdm[harness]'``."""
    if importlib.util.find_spec("aioxmpp") is None:
        print("mdm-harness: the harness is an extra: pip install 'open-mdm[harness]'", file=sys.stderr)
        return 2
    from mdm_harness.cli import main
    return main()
