"""Conformance harness for Multi-Device Messaging: real servers, pools of aioxmpp clients, scansion
scenarios matched with lxml, a CLI and a pytest plugin."""

from .clients import Client, ClientPool
from .environment import MdmEnvironment
from .scenario import Scenario, load_scenarios, parse_scenario
from .servers import Account, ServerHandle, start_server

__all__ = ["Account", "Client", "ClientPool", "MdmEnvironment", "Scenario", "ServerHandle", "load_scenarios",
           "parse_scenario", "start_server"]
