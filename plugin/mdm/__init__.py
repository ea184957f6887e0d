"""Multi-Device Messaging (MDM) for open XMPP servers.

The package is a sans-I/O core (:mod:`mdm.core`) wrapped by adapters: the XEP-0114 link
(:mod:`mdm.stream`), the bridge protocol codec (:mod:`mdm.bridge_protocol`) and the runnable
component (:mod:`mdm.component`). Requirements are cited by ID (R1-R10) from
``docs/requirements.md``.
"""

__version__ = "0.1.0"
