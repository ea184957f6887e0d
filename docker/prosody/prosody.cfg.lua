-- Prosody with Multi-Device Messaging (docker/compose.prosody.yml). Change the domain, the
-- component secret (also in docker/mdm-component.toml) and enable TLS before going live.
daemonize = false
pidfile = "/var/run/prosody/prosody.pid"
log = { info = "*console" }
plugin_paths = { "/usr/local/lib/prosody/mdm" }
interfaces = { "*" }
component_interfaces = { "*" }  -- the component connects from its own container
modules_enabled = {
    "roster", "saslauth", "tls", "disco", "ping", "presence", "message", "iq", "offline",
    "mam", "blocklist", "time", "version", "smacks",
    -- Prosody's own carbons and CSI queueing (the bridge loads both itself anyway): idle while
    -- the component serves, their stock job whenever it is down (R9.10)
    "carbons", "csi_simple",
    "mdm_bridge",
}
-- XEP-0191: tell a blocked contact with an error, as Prosody did before 0.12.5 and as ejabberd
-- does; Prosody 13 drops such messages silently by default. Either way no device gets them (R2.6).
bounce_blocked_messages = true
archive_expires_after = "1w"
default_archive_policy = true

VirtualHost "example.org"
    mdm_component = "mdm.example.org"
    mdm_ack_timeout = 10

Component "mdm.example.org"
    component_secret = "change-me"

Component "conference.example.org" "muc"
