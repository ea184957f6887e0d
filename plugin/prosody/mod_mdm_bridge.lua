-- mod_mdm_bridge: relays this host's sessions and messages to the MDM component.
--
-- The bridge decides nothing: it tells the component (an XEP-0114 component, by default
-- mdm.<host>) about sessions, carbons and presence, hands it every message to or from a local
-- user, and carries out the component's commands. The protocol is docs/bridge-protocol.md.
--
-- Where it sits: incoming messages are taken at priority -0.4 of message/bare and message/full,
-- after mod_blocklist (100) and mod_mam (0) have run, so blocking, privacy and the archive
-- govern every message as without MDM (R2.6); "route" resumes the same handler chain right after
-- this module (mod_message: RFC 6121 delivery or offline storage).
--
-- Fail open (nothing is lost): while the component is not connected every message takes the
-- native path; messages handed over but not acknowledged are delivered natively when the
-- component drops or does not answer within mdm_ack_timeout seconds.
--
-- Options: mdm_component (default "mdm." .. host), mdm_ack_timeout (default 10),
-- mdm_batch_size (events per stanza to the component, default 100).
-- This module replaces mod_carbons (XEP-0280): only the component copies messages.

local st = require "util.stanza";
local filters = require "util.filters";
local jid_bare = require "util.jid".bare;
local now = require "util.time".now;
local modulemanager = require "core.modulemanager";

local xmlns_bridge = "urn:x-open-mdm:bridge:0";
local xmlns_carbons = "urn:xmpp:carbons:2";
local xmlns_forward = "urn:xmpp:forward:0";
local xmlns_client = "jabber:client";
local xmlns_notify = "urn:x-open-mdm:notify:0";
local xmlns_caps = "http://jabber.org/protocol/caps";

-- The XEP-0115 caps node of a presence: which client software it is (device type, R8.3).
local function caps_node(presence)
	local c = presence and presence:get_child("c", xmlns_caps);
	return c and c.attr.node or nil;
end

local host = module.host;
local component_jid = module:get_option_string("mdm_component", "mdm." .. host);
local ack_timeout = module:get_option_number("mdm_ack_timeout", 10);
local full_sessions = prosody.full_sessions;

-- ref -> { event, name, handler, at } for a held message (message-in), or
--        { session, stanza, at } for a stanza held on its way to a background session (session-out)
local pending = {};
local last_ref = 0;
-- Stanzas the component (or the fail-open path) delivers: they pass our CSI filter untouched.
local bypass = setmetatable({}, { __mode = "k" });

-- The component host starts after this VirtualHost: look its connection up when needed.
local function component_session()
	local mod = modulemanager.get_module(component_jid, "component");
	return mod and mod.connected and mod.session or nil;
end

local function component_connected()
	return component_session() ~= nil;
end

-- Events are batched: every event of one pass of Prosody's loop (a burst read from a client,
-- say) goes to the component in one <events/> stanza, written straight to the component's
-- session as text, so each message costs one serialisation here and no extra routing.
local t_concat, t_remove = table.concat, table.remove;
local add_task = require "util.timer".add_task;
local batch_size = module:get_option_number("mdm_batch_size", 100);
local batch, batch_len = nil, 0;

local function flush_events()
	local b = batch;
	batch, batch_len = nil, 0;
	if not b then return; end
	local session = component_session();
	-- Not connected: nothing to tell; held messages are delivered natively on disconnect.
	if not session then return; end
	b[#b + 1] = "</events></message>";
	session.send(t_concat(b));
end

local function queue_event(xml)
	if not batch then
		batch = { "<message from='", host, "' to='", component_jid, "'><events xmlns='", xmlns_bridge, "'>" };
		add_task(0, flush_events);
	end
	batch_len = batch_len + 1;
	batch[#batch + 1] = xml;
	if batch_len >= batch_size then flush_events(); end
end

-- Queue one event element. A stanza forwarded inside it must say that it is jabber:client
-- (inside <forwarded/> it would otherwise inherit that namespace); it is serialised right here,
-- so the attribute is restored right after.
local function send_events(child, forwarded)
	if forwarded then
		local old_xmlns = forwarded.attr.xmlns;
		forwarded.attr.xmlns = xmlns_client;
		child:tag("forwarded", { xmlns = xmlns_forward }):add_child(forwarded):up();
		queue_event(tostring(child));
		forwarded.attr.xmlns = old_xmlns;
	else
		queue_event(tostring(child));
	end
end

-- Continue the event's handler chain right after our handler: what would have run without us.
local function deliver_natively(p)
	if p.session then -- a stanza for a background session: send it as the server meant to
		if full_sessions[p.session.full_jid] == p.session then
			bypass[p.stanza] = true;
			p.session.send(p.stanza);
		end
		return;
	end
	local handlers = prosody.hosts[host].events.get_handlers(p.name);
	local found = false;
	for i = 1, handlers and #handlers or 0 do
		local h = handlers[i];
		if found then
			local ret = h(p.event);
			if ret ~= nil then return ret; end
		elseif h == p.handler then
			found = true;
		end
	end
end

-- Held refs in the order they were handed over (refs are increasing numbers), so what is
-- delivered natively keeps its original order.
local function in_order(refs)
	local keys = {};
	for ref in pairs(refs) do keys[#keys + 1] = ref; end
	table.sort(keys, function(a, b) return tonumber(a) < tonumber(b); end);
	return keys;
end

local function fail_open_all(reason)
	local refs = pending;
	pending = {};
	for _, ref in ipairs(in_order(refs)) do
		module:log("debug", "Delivering held message %s natively: %s", ref, reason);
		deliver_natively(refs[ref]);
	end
end

-- Incoming: every message for a local user goes to the component, which answers with
-- deliver/route/ack commands for its ref.
-- Only users with an MDM client (carbons on) or a session in the background can be served
-- differently by the component; everyone else's messages take the native path at once, exactly
-- as without the bridge (no round trip that could race with their presence, R1.3 / R9.7).
local bare_sessions = prosody.bare_sessions;
local function component_can_matter(bare)
	local user = bare_sessions[bare];
	if not user then return false; end
	for _, session in pairs(user.sessions) do
		if session.want_carbons or session.mdm_csi_state == "inactive" then return true; end
	end
	return false;
end

-- Groupchat, headline and error messages are never copied (docs/bridge-protocol.md): they take
-- the native path at once and reach a background session through the hold filter.
local native_types = { groupchat = true, headline = true, error = true };

local function incoming_handler(name)
	local handler;
	handler = function(event)
		if not component_connected() then return; end -- fail open: native delivery
		local stanza, origin = event.stanza, event.origin;
		if native_types[stanza.attr.type] then return; end
		if stanza.attr.to == nil then -- a message to one's own bare JID (RFC 6120 §10.3.3)
			stanza.attr.to = origin.username .. "@" .. origin.host;
		end
		if not component_can_matter(jid_bare(stanza.attr.to)) then return; end
		last_ref = last_ref + 1;
		local ref = tostring(last_ref);
		pending[ref] = { event = event, name = name, handler = handler, at = now() };
		send_events(st.stanza("message-in", { ref = ref }), stanza);
		return true;
	end
	return handler;
end
module:hook("message/bare", incoming_handler("message/bare"), -0.4);
module:hook("message/full", incoming_handler("message/full"), -0.4);

-- Outgoing: a copy of what a local session sends; the message itself goes on natively.
local function outgoing_handler(event)
	if event.stanza:get_child("body") then event.origin.mdm_active_at = now(); end
	if not component_connected() then return; end
	send_events(st.stanza("message-out", { jid = event.origin.full_jid }), event.stanza);
end
module:hook("pre-message/bare", outgoing_handler, -0.6);
module:hook("pre-message/full", outgoing_handler, -0.6);
module:hook("pre-message/host", outgoing_handler, -0.6);

-- Sessions, carbons, presence.
-- Short ids for sessions, so the component's <fanout/> names targets compactly.
local by_sid = {};
local last_sid = 0;
local function sid_of(session)
	local sid = session.mdm_sid;
	if not sid then
		last_sid = last_sid + 1;
		sid = tostring(last_sid);
		session.mdm_sid = sid;
		by_sid[sid] = session;
	end
	return sid;
end

local function session_events(session, out)
	out:tag("bind", { jid = session.full_jid, sid = sid_of(session) }):up();
	if session.want_carbons then
		out:tag("carbons", { jid = session.full_jid, enabled = "true" }):up();
	end
	if session.mdm_csi_state then
		out:tag("csi", { jid = session.full_jid, state = session.mdm_csi_state }):up();
	end
	if session.presence then
		-- idle: seconds since the session last sent available presence or a message with a body,
		-- so a restarted component knows the active client again (R3.1).
		local active_at = session.mdm_active_at;
		out:tag("presence", { jid = session.full_jid, available = "true",
			priority = tostring(session.priority or 0), caps = caps_node(session.presence),
			idle = active_at and string.format("%.3f", now() - active_at) or nil }):up();
	end
	if session.hibernating then
		out:tag("hibernated", { jid = session.full_jid, state = "true" }):up();
	end
end

module:hook("resource-bind", function(event)
	local sid = sid_of(event.session);
	if not component_connected() then return; end
	send_events(st.stanza("bind", { jid = event.session.full_jid, sid = sid }));
end);

module:hook("resource-unbind", function(event)
	local session = event.session;
	if session.mdm_sid then by_sid[session.mdm_sid] = nil; end
	if not component_connected() then return; end
	send_events(st.stanza("unbind", { jid = session.full_jid }));
end);

local function toggle_carbons(event)
	local origin, stanza = event.origin, event.stanza;
	local enable = stanza.tags[1].name == "enable";
	origin.want_carbons = enable and xmlns_carbons or nil;
	origin.send(st.reply(stanza));
	if component_connected() then
		send_events(st.stanza("carbons", { jid = origin.full_jid, enabled = enable and "true" or "false" }));
	end
	return true;
end
module:hook("iq-set/self/" .. xmlns_carbons .. ":enable", toggle_carbons);
module:hook("iq-set/self/" .. xmlns_carbons .. ":disable", toggle_carbons);
module:add_feature(xmlns_carbons);

-- XEP-0352 CSI, as mod_csi re-fires the client's nonzas. The session's state is kept so a
-- reconnecting component learns it with the other session facts. While a session is in the
-- background, every stanza for it goes to the component, which holds or flushes (R5); this
-- filter runs before mod_smacks' queue (-999) so held stanzas are not counted as sent.
local function hold_filter(stanza, session)
	if bypass[stanza] or not st.is_stanza(stanza) or stanza.attr.xmlns ~= nil
		or session.mdm_csi_state ~= "inactive" or not component_connected() then
		return stanza;
	end
	local name = stanza.name;
	if name ~= "message" and name ~= "presence" and name ~= "iq" then return stanza; end
	last_ref = last_ref + 1;
	local ref = tostring(last_ref);
	pending[ref] = { session = session, stanza = st.clone(stanza), at = now() };
	send_events(st.stanza("session-out", { ref = ref, jid = session.full_jid }), stanza);
	return nil;
end

local function csi_handler(state)
	return function(event)
		local session = event.origin;
		session.mdm_csi_state = state;
		if state == "inactive" then
			filters.add_filter(session, "stanzas/out", hold_filter, 500);
		else
			filters.remove_filter(session, "stanzas/out", hold_filter);
		end
		if component_connected() then
			send_events(st.stanza("csi", { jid = session.full_jid, state = state }));
		end
	end
end
module:depends("csi");
module:hook("csi-client-active", csi_handler("active"));
module:hook("csi-client-inactive", csi_handler("inactive"));

-- Broadcast presence (no 'to'), before mod_presence (priority 0) handles and swallows it.
module:hook("pre-presence/bare", function(event)
	local stanza, origin = event.stanza, event.origin;
	if stanza.attr.to ~= nil then return; end
	local t = stanza.attr.type;
	if t ~= nil and t ~= "unavailable" then return; end
	if t == nil then origin.mdm_active_at = now(); end
	if not component_connected() then return; end
	send_events(st.stanza("presence", { jid = origin.full_jid, available = t == nil and "true" or "false",
		priority = stanza:get_child_text("priority") or "0", caps = caps_node(stanza) }));
end, 1);

-- XEP-0198 (mod_smacks): a device that went away without logging out keeps its session for a
-- while, a phantom session (R7.1); it is counted apart by the component's capacity monitor.
local function hibernation(state)
	return function(event)
		if component_connected() and event.origin.full_jid then
			send_events(st.stanza("hibernated", { jid = event.origin.full_jid, state = state }));
		end
	end
end
module:hook("smacks-hibernation-start", hibernation("true"));

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
		if component_connected() then
			send_events(st.stanza("push", { jid = username .. "@" .. host,
				registered = push_registered(username) and "true" or "false" }));
		end
	end);
end
module:hook("iq-set/self/" .. xmlns_push .. ":enable", push_changed, 1);
module:hook("iq-set/self/" .. xmlns_push .. ":disable", push_changed, 1);
module:hook("smacks-hibernation-end", function(event)
	local session = event.resumed or event.origin;
	if component_connected() and session.full_jid then
		send_events(st.stanza("hibernated", { jid = session.full_jid, state = "false" }));
	end
end);

-- Commands from the component, accepted only from the configured component JID.
local function normalise(el, parent_ns)
	local ns = el.attr.xmlns or parent_ns;
	if el.attr.xmlns == parent_ns then el.attr.xmlns = nil; end
	for _, child in ipairs(el.tags) do normalise(child, ns); end
end

-- Send a held stanza itself, plus the notification hint if any. The hint is added for this one
-- send and taken off again: session.send has serialised (or, mod_smacks, cloned) the stanza by
-- the time it returns, so no copy is made per device.
local function send_held(p, session, notify)
	local held = p.event and p.event.stanza or p.stanza;
	local old_xmlns = held.attr.xmlns;
	held.attr.xmlns = nil;
	if notify then held:tag("notify", { xmlns = xmlns_notify, value = notify }):up(); end
	bypass[held] = true;
	session.send(held);
	if notify then
		t_remove(held.tags);
		t_remove(held);
	end
	held.attr.xmlns = old_xmlns;
end

local function finish(ref, p, reached, held_by_component)
	pending[ref] = nil;
	-- An ack whose deliveries all missed (the sessions left meanwhile) is a route: offline
	-- storage keeps the message (R2.2). held="true": the component keeps it in a buffer.
	if not reached and not p.session and not held_by_component then
		deliver_natively(p);
	end
end

local fanout_kinds = { notify = "true", silent = "false", plain = false };

module:hook("message/host", function(event)
	local stanza = event.stanza;
	local commands = stanza:get_child("commands", xmlns_bridge);
	if not commands then return; end
	if stanza.attr.from ~= component_jid then
		module:log("warn", "Ignored MDM bridge commands from %s: only %s may send them",
			tostring(stanza.attr.from), component_jid);
		return true;
	end
	local reached = {}; -- refs with at least one delivery that reached a session
	for cmd in commands:childtags(nil, xmlns_bridge) do
		local name, ref = cmd.name, cmd.attr.ref;
		if name == "deliver" then
			-- A ref we no longer hold was already delivered natively: drop, never twice (R2.4).
			local p = ref and pending[ref];
			local session = full_sessions[cmd.attr.to];
			if (ref == nil or p) and session and session.host == host then
				local forwarded = cmd:get_child("forwarded", xmlns_forward);
				local payload = forwarded and forwarded.tags[1];
				if payload then
					normalise(payload, xmlns_client);
					bypass[payload] = true;
					session.send(payload);
					if ref then reached[ref] = true; end
				elseif p then
					send_held(p, session, cmd.attr.notify);
					reached[ref] = true;
				else
					module:log("warn", "MDM deliver command without a stanza to deliver");
				end
			end
		elseif name == "fanout" then
			-- The held message to several sessions by id, then done with it (an ack).
			local p = ref and pending[ref];
			if p then
				local any = false;
				for attr, notify in pairs(fanout_kinds) do
					local list = cmd.attr[attr];
					if list then
						for sid in list:gmatch("%S+") do
							local session = by_sid[sid];
							if session and session.host == host then
								send_held(p, session, notify or nil);
								any = true;
							end
						end
					end
				end
				finish(ref, p, any, false);
			end
		elseif name == "route" then
			local p = ref and pending[ref];
			if p then
				pending[ref] = nil;
				deliver_natively(p);
			end
		elseif name == "ack" then
			local p = ref and pending[ref];
			if p then finish(ref, p, reached[ref], cmd.attr.held == "true"); end
		else
			module:log("warn", "Unknown MDM bridge command <%s/>", name);
		end
	end
	return true;
end, 10);

-- A component that does not answer in time must not hold messages: deliver them natively.
module:add_timer(1, function()
	if next(pending) ~= nil then
		local limit = now() - ack_timeout;
		for _, ref in ipairs(in_order(pending)) do
			local p = pending[ref];
			if p.at < limit then
				pending[ref] = nil;
				module:log("warn", "MDM component did not answer for message %s within %ds; delivering natively",
					ref, ack_timeout);
				deliver_natively(p);
			end
		end
	end
	return 1;
end);

-- The component host starts after this VirtualHost: attach to its events when it appears.
local function attach(h)
	if h ~= component_jid then return; end
	local comp = module:context(component_jid);
	comp:hook("component-authenticated", function()
		-- Tell the (re)connected component everything it needs: it starts from a clean slate.
		batch, batch_len = nil, 0; -- nothing queued before this connection belongs to it
		queue_event("<sync/>");
		for _, user in pairs(prosody.hosts[host].sessions) do
			for _, session in pairs(user.sessions) do
				if session.full_jid then
					local out = st.stanza("x");
					session_events(session, out);
					for _, child in ipairs(out.tags) do queue_event(tostring(child)); end
				end
			end
		end
		if modulemanager.is_loaded(host, "cloud_notify") and push_store.users then
			for username in push_store:users() do
				if push_registered(username) then
					queue_event(tostring(st.stanza("push", { jid = username .. "@" .. host, registered = "true" })));
				end
			end
		end
		flush_events();
		module:log("info", "MDM component %s connected; reported the sessions of %s", component_jid, host);
	end);
	comp:hook("component-disconnected", function()
		module:log("warn", "MDM component %s disconnected; delivering natively until it is back", component_jid);
		fail_open_all("component disconnected");
	end);
end
if prosody.hosts[component_jid] then attach(component_jid); end
module:hook_global("host-activated", attach);

function module.load()
	if modulemanager.is_loaded(host, "carbons") then
		module:log("error", "mod_carbons is loaded beside mod_mdm_bridge: disable it, the MDM component copies messages");
	end
	if modulemanager.is_loaded(host, "csi_simple") or modulemanager.is_loaded(host, "csi_battery_saver") then
		module:log("error", "A CSI queueing module is loaded beside mod_mdm_bridge: disable it, the MDM component holds stanzas");
	end
end

function module.unload()
	fail_open_all("module unloaded");
	for _, user in pairs(prosody.hosts[host].sessions or {}) do
		for _, session in pairs(user.sessions) do
			filters.remove_filter(session, "stanzas/out", hold_filter);
		end
	end
end
