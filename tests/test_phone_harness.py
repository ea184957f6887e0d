"""Issue 11 harness pieces without a server: the phone verbs and the features they ask for, client
transports (R9.5), and how the push app server double reads a XEP-0357 publish (R3.6)."""

import pytest
from lxml import etree

from mdm_harness.push import summary
from mdm_harness.runner import push_node
from mdm_harness.scenario import ScenarioError, parse_scenario

SCENARIO = """# R5.7 phone
## server-features: pep
[Client] Mobile
	jid: alice@localhost/mobile
	password: pw
	transport: direct-tls
[Client] Laptop
	jid: alice@localhost/laptop
	password: pw
	transport: websocket
-----
Mobile connects
Mobile enables stream management
Mobile enables push
Mobile loses the connection
Mobile resumes
Component resumes
Push service receives:
	<push node="mobile-push" alerting="true"/>
Push service receives nothing
"""


def test_R5_7_R3_6_phone_verbs_parse_and_ask_the_server_for_what_they_need():
    sc = parse_scenario(SCENARIO)
    verbs = [(s.actor, s.verb) for s in sc.steps]
    assert verbs == [("Mobile", "connects"), ("Mobile", "sm-enable"), ("Mobile", "push-enable"),
                     ("Mobile", "drop"), ("Mobile", "resume-stream"), ("Component", "resume"),
                     ("Push service", "receives"), ("Push service", "receives-nothing")]
    assert sc.features == ("direct-tls", "pep", "push", "stream-management", "websocket")
    assert sc.clients["Mobile"].transport == "direct-tls"


def test_R9_5_unknown_transport_is_a_parse_error():
    with pytest.raises(ScenarioError, match="transport must be one of"):
        parse_scenario(SCENARIO.replace("transport: websocket", "transport: bosh"))


def test_the_push_service_only_receives():
    with pytest.raises(ScenarioError, match="only receives"):
        parse_scenario(SCENARIO.replace("Mobile resumes", "Push service sends:\n\t<x/>"))


def test_R3_6_push_summary_alerting_is_a_body():
    publish = etree.fromstring(
        "<iq xmlns='jabber:component:accept' type='set' id='p1' from='localhost' to='push.localhost'>"
        "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='mobile-push'><item>"
        "<notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>"
        "<field var='message-count'><value>1</value></field>"
        "<field var='last-message-sender'><value>bob@localhost/desktop</value></field>"
        "<field var='last-message-body'><value>hi</value></field>"
        "</x></notification></item></publish></pubsub></iq>")
    push = summary(publish)
    assert dict(push.attrib) == {"node": "mobile-push", "alerting": "true", "count": "1",
                                 "sender": "bob@localhost/desktop", "body": "hi"}
    for field in publish.iter("{jabber:x:data}field"):
        if field.get("var") == "last-message-body":
            field.getparent().remove(field)
    assert summary(publish).get("alerting") == "false"
    assert push_node("Juliet's phone") == "juliet-s-phone-push"


FEATURES = ("stream-management", "push", "direct-tls", "websocket", "pep")


def test_R9_5_R3_6_ejabberd_config_with_every_feature(tmp_path):
    import yaml

    from mdm_harness.push import SECRET as PUSH_SECRET
    from mdm_harness.servers import ejabberd
    cfg = yaml.safe_load(ejabberd.render_config(1, 2, 3, features=FEATURES, direct_tls_port=4,
                                                tls_pem=tmp_path / "c.pem", push_port=5))
    mods = cfg["modules"]
    assert mods["mod_stream_mgmt"] == {"resume_timeout": 300}
    assert mods["mod_push"] == {"include_body": True, "include_sender": True}
    assert "pep" in mods["mod_pubsub"]["plugins"]
    services = {lst["port"]: lst for lst in cfg["listen"] if lst["module"] == "ejabberd_service"}
    # the push double on a listener of its own: ejabberd_service registers every host of a listener
    assert services[2]["hosts"] == {"mdm.localhost": {"password": ejabberd.SECRET}}
    assert services[5]["hosts"] == {"push.localhost": {"password": PUSH_SECRET}}
    (tls,) = [lst for lst in cfg["listen"] if lst["port"] == 4]
    assert tls["module"] == "ejabberd_c2s" and tls["tls"] is True and cfg["certfiles"] == [str(tmp_path / "c.pem")]
    (http,) = [lst for lst in cfg["listen"] if lst["module"] == "ejabberd_http"]
    assert http["request_handlers"]["/ws"] == "ejabberd_http_ws"


def test_R9_5_R3_6_prosody_config_with_every_feature(tmp_path):
    from mdm_harness.servers import prosody
    text = prosody.render_config(tmp_path, 1, 2, features=FEATURES, direct_tls_port=4, http_port=6,
                                 tls=(tmp_path / "c.crt", tmp_path / "c.key"))
    for module in ("smacks", "cloud_notify", "websocket", "pep"):
        assert f'"{module}"' in text
    assert "c2s_direct_tls_ports = { 4 }" in text and 'Component "push.localhost"' in text
    assert "push_notification_with_body = true" in text
