"""Server backends: each starts a real XMPP server as an ordinary process from a generated temp
config, with the bridge loaded and the accounts a scenario needs, and stops it by pid."""

from __future__ import annotations

from .base import Account, ServerHandle, start_server

__all__ = ["Account", "ServerHandle", "start_server"]
