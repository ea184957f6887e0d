"""R1.3 / R9.10: with MDM disabled the core tells the bridges to leave delivery to the server's own
carbons and CSI modules (ServiceMode), and tells them again when it is switched back on (R1.2)."""

from mdm.bridge_protocol import encode_commands
from mdm.core import CoreConfig, MdmCore
from mdm.events import Resync, ServiceMode, SyncDone


def test_R1_3_a_bridge_syncing_with_mdm_off_is_told_to_serve_stock():
    core = MdmCore(CoreConfig(enabled=False))
    assert core.handle(Resync("localhost"), 0.0) == [ServiceMode("localhost", False)]


def test_R1_3_mdm_on_needs_no_word_at_sync():
    assert MdmCore(CoreConfig()).handle(Resync("localhost"), 0.0) == []


def test_R1_2_switching_live_tells_every_synced_host_once():
    core = MdmCore(CoreConfig())
    for host in ("b.example", "a.example"):
        core.handle(Resync(host), 0.0)
        core.handle(SyncDone(host), 0.0)
    off = core.reconfigure(CoreConfig(enabled=False), now=1.0)
    assert [a for a in off if isinstance(a, ServiceMode)] == [ServiceMode("a.example", False),
                                                              ServiceMode("b.example", False)]
    # another window, MDM still off: nothing to switch
    assert not any(isinstance(a, ServiceMode) for a in core.reconfigure(CoreConfig(enabled=False, active_window=60),
                                                                         now=2.0))
    on = core.reconfigure(CoreConfig(), now=3.0)
    assert [a for a in on if isinstance(a, ServiceMode)] == [ServiceMode("a.example", True),
                                                             ServiceMode("b.example", True)]


def test_R1_3_mode_command_on_the_wire():
    (stanza,) = encode_commands([ServiceMode("localhost", False)], "mdm.localhost")
    assert stanza[0][0].tag == "{urn:x-open-mdm:bridge:0}mode" and stanza[0][0].get("value") == "stock"
