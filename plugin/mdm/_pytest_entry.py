"""The pytest11 entry point: the harness's pytest plugin (``mdm_env``, ``--mdm-server``) when the
harness extra is installed, nothing otherwise, so pytest keeps working in a virtualenv that holds
the component alone (``pip install open-mdm``) next to pytest."""

from __future__ import annotations

import importlib.util

pytest_plugins = ["mdm_harness.pytest_plugin"] if all(
    importlib.util.find_spec(m) is not None for m in ("aioxmpp", "pytest_asyncio")) else []
