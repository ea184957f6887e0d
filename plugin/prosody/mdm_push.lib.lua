-- mod_mdm_bridge: phones' push (XEP-0357, mod_cloud_notify; R3.6, R7.1).
--
-- Which users have a push registration (read from mod_cloud_notify's own store after it handled
-- the enable/disable iq, so what the component learns is what mod_cloud_notify keeps: phantom
-- sessions, R7.1), and the veto: while the component says a push user has an active client
-- (<active/> commands), mod_cloud_notify's alerting pushes for an IM to that user's other devices
-- are blocked, or made silent (mdm_push_while_active = "silent"); calls (Jingle Message
-- Initiation with RTP) ring every device as stock (R9.4); non-alerting pushes go out.
--
-- Loaded by mod_mdm_bridge.lua with module:require; `bridge` holds mdm_on, component_connected,
-- send_events and queue_event.

local st = require "util.stanza";
local now = require "util.time".now;
local modulemanager = require "core.modulemanager";
local add_task = require "util.timer".add_task;

local xmlns_jmi = "urn:xmpp:jingle-message:0";

return function(bridge)
	local host = module.host;
	local mdm_on, component_connected = bridge.mdm_on, bridge.component_connected;
	local send_events, queue_event = bridge.send_events, bridge.queue_event;
	local push_while_active = module:get_option_string("mdm_push_while_active", "none");

	-- Users with a push registration, as last reported to the component: their sent IMs always
	-- matter to it (R3.6 needs their active client even with one session online). One table for
	-- good (the module reads it for every IM sent): emptied in place, never replaced.
	local users = {};
	-- bare JID -> until when (util.time.now) the user has an active client, as the component
	-- last said; only users with a push registration are told about.
	local active_until = {};

	-- XEP-0357 (mod_cloud_notify): users with a push registration. Read from mod_cloud_notify's own
	-- store after it handled the iq, so what we report is what it keeps (R7.1 phantom sessions).
	local xmlns_push = "urn:xmpp:push:0";
	local push_store = module:open_store("cloud_notify");
	local function push_registered(username)
		local registrations = push_store:get(username);
		return registrations ~= nil and next(registrations) ~= nil;
	end
	local function push_changed(event)
		local username = event.origin.username;
		add_task(0, function() -- after mod_cloud_notify answered and stored
			local registered = push_registered(username);
			users[username .. "@" .. host] = registered or nil;
			if component_connected() then
				send_events(st.stanza("push", { jid = username .. "@" .. host,
					registered = registered and "true" or "false" }));
			end
		end);
	end
	module:hook("iq-set/self/" .. xmlns_push .. ":enable", push_changed, 1);
	module:hook("iq-set/self/" .. xmlns_push .. ":disable", push_changed, 1);

	-- R3.6: mod_cloud_notify asks before each push; while the user has an active client (as the
	-- component says) an alerting push (one with a body: mod_cloud_notify's "important") for an IM is
	-- blocked, or made silent (mdm_push_while_active = "silent"). Calls ring every device as stock
	-- (R9.4); non-alerting pushes go out.
	local function is_call(stanza)
		local propose = stanza and stanza.get_child and stanza:get_child("propose", xmlns_jmi);
		return propose ~= nil and propose:get_child("description", "urn:xmpp:jingle:apps:rtp:1") ~= nil;
	end
	local summary_hidden = { ["last-message-body"] = true, ["last-message-sender"] = true };
	module:hook("cloud_notify/push", function(event)
		if not mdm_on() or not event.important or not event.username then return; end
		local until_ = active_until[event.username .. "@" .. host];
		if not until_ or until_ <= now() or is_call(event.original_stanza) then return; end
		if push_while_active == "silent" then
			local form = event.notification_payload and event.notification_payload:get_child("x", "jabber:x:data");
			if form then
				form:maptags(function(field)
					if summary_hidden[field.attr.var] then return nil; end
					return field;
				end);
			end
			event.important = false;
			return;
		end
		event.reason = "MDM: the user is active on another device (R3.6)";
		return true;
	end, 10);

	return {
		users = users,
		-- <active user jid for/>: `seconds` nil when the user has no active client
		set_active = function(user, seconds) active_until[user] = seconds and now() + seconds or nil; end,
		reset = function() active_until = {}; end,
		-- on the component's handshake: every user with a registration, as <push/> events
		sync = function()
			if not (modulemanager.is_loaded(host, "cloud_notify") and push_store.users) then return; end
			for k in pairs(users) do users[k] = nil; end
			for username in push_store:users() do
				if push_registered(username) then
					users[username .. "@" .. host] = true;
					queue_event(tostring(st.stanza("push", { jid = username .. "@" .. host, registered = "true" })));
				end
			end
		end,
	};
end
