-- mod_mdm_bridge: the link to the component and its batches (docs/bridge-protocol.md).
--
-- Whether the component serves (from its handshake until its link drops), how to reach its
-- session, the R9.6 limits on what is handed over (depth, event and batch bytes; what goes over
-- them takes the native path, logged at most once a minute per kind), and the batching of events:
-- every event of one pass of Prosody's loop goes in one <events/> stanza, written to the
-- component's session as text.
--
-- Loaded by mod_mdm_bridge.lua with module:require; `bridge.drop_plan_of(jid)` is called for every
-- event about a user (issue 15: any event may change what the component would deliver to them).
-- Returns the functions the module uses; none of them is a new cost per IM (the module keeps them
-- in locals, as before the split).

local st = require "util.stanza";
local now = require "util.time".now;
local modulemanager = require "core.modulemanager";

local xmlns_bridge = "urn:x-open-mdm:bridge:0";
local xmlns_forward = "urn:xmpp:forward:0";
local xmlns_client = "jabber:client";

return function(bridge)
	local host, component_jid, drop_plan_of = module.host, bridge.component_jid, bridge.drop_plan_of;

	-- R9.6 limits. The component echoes a handed-over stanza back in its copies, and Prosody closes a
	-- component link that sends it a stanza over component_stanza_size_limit: an event must leave
	-- room for the command envelope and the XEP-0280 wrapping (4 KiB is plenty).
	local component_limit = module:get_option_number("component_stanza_size_limit",
		module:get_option_number("s2s_stanza_size_limit", 1024 * 512));
	local max_event_bytes = component_limit - 4096;
	local max_depth = module:get_option_number("mdm_max_depth", 1000);
	local batch_bytes_max = module:get_option_number("mdm_batch_bytes", 256 * 1024);

	-- True from the component's handshake (when the bridge sends its <sync/>) until its link drops:
	-- only then does the component serve this host's users. Kept here because mod_component still
	-- reports the link as connected while it runs "component-disconnected".
	local serving = false;

	-- The component host starts after this VirtualHost: look its connection up when needed.
	local function component_session()
		if not serving then return nil; end
		local mod = modulemanager.get_module(component_jid, "component");
		return mod and mod.connected and mod.session or nil;
	end

	local function component_connected()
		return component_session() ~= nil;
	end

	-- How deep an element nests (1 for a childless one); stops counting past `limit`.
	local function depth_of(el, limit)
		local deepest = 0;
		for _, child in ipairs(el.tags) do
			local d = depth_of(child, limit - 1);
			if d > deepest then deepest = d; end
			if deepest >= limit then break; end
		end
		return deepest + 1;
	end

	-- Input any client can repeat (over-limit stanzas, forged commands) is logged at most once a
	-- minute per kind, with a count (R9.6: no log flood). format(count, ...) makes the line.
	local limited_seen, limited_logged = {}, {};
	local function warn_limited(kind, format, ...)
		limited_seen[kind] = (limited_seen[kind] or 0) + 1;
		local t = now();
		if (limited_logged[kind] or 0) + 60 <= t then
			module:log("warn", format, limited_seen[kind], ...);
			limited_seen[kind], limited_logged[kind] = 0, t;
		end
	end

	local function note_over_limit(kind, detail)
		warn_limited(kind, "MDM: %d stanza(s) %s in the last minute took the native path (latest: %s)", kind, detail);
	end

	-- Events are batched: every event of one pass of Prosody's loop (a burst read from a client,
	-- say) goes to the component in one <events/> stanza, written straight to the component's
	-- session as text, so each message costs one serialisation here and no extra routing.
	local t_concat = table.concat;
	local add_task = require "util.timer".add_task;
	local batch_size = module:get_option_number("mdm_batch_size", 100);
	local batch, batch_len, batch_bytes = nil, 0, 0;

	local function flush_events()
		local b = batch;
		batch, batch_len, batch_bytes = nil, 0, 0;
		if not b then return; end
		local session = component_session();
		-- Not connected: nothing to tell; held messages are delivered natively on disconnect.
		if not session then return; end
		b[#b + 1] = "</events></message>";
		session.send(t_concat(b));
	end

	-- A batch is capped by count (mdm_batch_size) and by bytes (mdm_batch_bytes): an event that
	-- would take it over the byte cap starts a new stanza, so one stanza is at most the larger of the
	-- cap and one event (itself at most max_event_bytes), well under the component's 1 MiB.
	local function queue_event(xml)
		if batch and batch_bytes + #xml > batch_bytes_max then flush_events(); end
		if not batch then
			batch = { "<message from='", host, "' to='", component_jid, "'><events xmlns='", xmlns_bridge, "'>" };
			add_task(0, flush_events);
		end
		batch_len = batch_len + 1;
		batch_bytes = batch_bytes + #xml;
		batch[#batch + 1] = xml;
		if batch_len >= batch_size or batch_bytes >= batch_bytes_max then flush_events(); end
	end

	-- Queue one event element. A stanza forwarded inside it must say that it is jabber:client
	-- (inside <forwarded/> it would otherwise inherit that namespace); it is serialised right here,
	-- so the attribute is restored right after. Returns false, queueing nothing, when the forwarded
	-- stanza is over the limits (R9.6): the caller sends it the native way.
	local function send_events(child, forwarded)
		-- Issue 15: any event about a user may change what the component would deliver to them.
		drop_plan_of(child.attr.jid);
		if not forwarded then
			queue_event(tostring(child));
			return true;
		end
		if depth_of(forwarded, max_depth + 1) > max_depth then
			note_over_limit("nested deeper than mdm_max_depth (" .. max_depth .. ")",
				tostring(forwarded.attr.from) .. " -> " .. tostring(forwarded.attr.to));
			return false;
		end
		local old_xmlns = forwarded.attr.xmlns;
		forwarded.attr.xmlns = xmlns_client;
		local inner = tostring(forwarded);
		forwarded.attr.xmlns = old_xmlns;
		if #inner > max_event_bytes then
			note_over_limit("larger than " .. max_event_bytes .. " bytes",
				tostring(forwarded.attr.from) .. " -> " .. tostring(forwarded.attr.to) .. ", " .. #inner .. " bytes");
			return false;
		end
		queue_event(child:top_tag() .. "<forwarded xmlns='" .. xmlns_forward .. "'>" .. inner .. "</forwarded></"
			.. child.name .. ">");
		return true;
	end

	-- R9.6: stanzas routed to the component's own JID (disco, ad-hoc commands, or anything a client
	-- cares to send it) are held to the bridge's depth limit too: one deeply nested stanza must not
	-- make the component's parser drop the link for everyone.
	local function guard_component(event)
		local stanza = event.stanza;
		if depth_of(stanza, max_depth + 1) > max_depth then
			note_over_limit("for the component nested deeper than mdm_max_depth (" .. max_depth .. ")",
				tostring(stanza.attr.from));
			if stanza.attr.type ~= "error" and stanza.attr.type ~= "result" then
				event.origin.send(st.error_reply(stanza, "modify", "policy-violation", "Nested too deeply"));
			end
			return true;
		end
		-- What this bridge queued goes first: net.server_epoll reads every ready socket before it runs
		-- timers again, so a stanza a client sent in reply to something queued with an event (the
		-- unavailable presence of an ended session, say) would otherwise reach the component ahead of
		-- that event, and the component would answer from a stale view (the harness's barrier does).
		if batch then flush_events(); end
	end

	return {
		is_serving = function() return serving; end,
		set_serving = function(on) serving = on; end,
		component_connected = component_connected,
		warn_limited = warn_limited,
		queue_event = queue_event,
		flush_events = flush_events,
		send_events = send_events,
		guard_component = guard_component,
		-- a (re)connected component: nothing queued before belongs to it
		reset = function() batch, batch_len, batch_bytes = nil, 0, 0; end,
	};
end
