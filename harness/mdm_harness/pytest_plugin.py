"""pytest fixtures for multi-client tests against a real server with the component.

    async def test_both_devices_get_it(mdm_env):
        laptop = await mdm_env.online("alice@localhost", "alice-password", "laptop")
        mobile = await mdm_env.online("alice@localhost", "alice-password", "mobile")
        bob = await mdm_env.online("bob@localhost", "bob-password", "desktop")
        await bob.send("<message to='alice@localhost' type='chat'><body>hi</body></message>")
        assert (await laptop.next_stanza()).findtext("{jabber:client}body") == "hi"

Accounts alice, bob and colin exist with passwords ``<name>-password``; the server is chosen by
``--mdm-server`` (default prosody). Needs pytest-asyncio (tests marked ``@pytest.mark.asyncio``
or asyncio_mode=auto).
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from .environment import DEFAULT_ACCOUNTS, MdmEnvironment


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--mdm-server", action="append", default=None,
                     help="XMPP server for mdm_env / conformance tests (repeatable; default prosody)")


def mdm_servers(config: pytest.Config) -> list[str]:
    """The servers named (``KIND`` or ``KIND:REGEX``, the regex selecting conformance scenarios)."""
    return [s.partition(":")[0] for s in config.getoption("--mdm-server") or ["prosody"]]


@pytest_asyncio.fixture
async def mdm_env(request: pytest.FixtureRequest):
    async with MdmEnvironment(mdm_servers(request.config)[0], DEFAULT_ACCOUNTS) as env:
        yield env
