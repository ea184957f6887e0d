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
-- Fail open is stock (R9.6, R9.10): while the component is not serving (not connected, or the
-- link just dropped) every message takes the native path, and this host behaves exactly as
-- Prosody without the bridge: the bridge loads Prosody's own mod_carbons and mod_csi_simple and
-- lets them work. Copies are made by mod_carbons for the sessions whose `want_carbons` is set;
-- the bridge answers the XEP-0280 iq itself, keeps the client's choice in `mdm_carbons` and sets
-- `want_carbons` only while the component is not serving (flipped for every session when the
-- component connects or drops). Likewise mod_csi_simple holds stanzas for background sessions
-- only while the component is not serving; while it serves, the bridge's own hold filter does.
-- Messages handed over but not acknowledged are delivered natively (mod_carbons copying them)
-- when the component drops or does not answer within mdm_ack_timeout seconds.
--
-- Limits (R9.6: no client can knock the component link over; docs/operations.md): a stanza is
-- handed over only if it is at most mdm_max_depth elements deep and its event fits the server's
-- own limit for stanzas from the component (component_stanza_size_limit, as the component sends
-- copies back); anything bigger or deeper takes the native path (stock carbons for that message).
-- Each <events/> stanza holds at most mdm_batch_size events and mdm_batch_bytes bytes (a single
-- larger event goes alone). Stanzas routed to the component's JID are held to the same depth.
--
-- Phones (issue 11): a session whose XEP-0198 stream is hibernated is held like a CSI-inactive
-- one (R5.7): the hold filter sends what it would be given to the component, so neither mod_smacks'
-- queue nor mod_cloud_notify sees it while the user is active elsewhere. The component tells the
-- bridge which of its push users has an active client (<active/>), and the bridge then blocks
-- mod_cloud_notify's alerting pushes for that user's other devices (R3.6) through its
-- `cloud_notify/push` event; calls (Jingle Message Initiation with RTP) are never blocked.
--
-- Delivery plans (issue 15, docs/bridge-protocol.md "Delivery plans"): when the component answers
-- an IM to a bare JID with a <fanout plan=…/>, the bridge keeps that fanout as the user's plan and
-- delivers the user's next plannable IMs (chat, a body, only the children <plan-rules/> lists) on
-- it at once, without a round trip, until the plan expires or any event about the user goes to
-- the component (which drops it). A plan is only taken from the answer to the user's latest
-- handed-over message, so nothing overtakes a message still waiting for the component.
--
-- Modern logins (R9.11): a phone that logs in with SASL2 + Bind2 chooses carbons and its CSI state
-- inline; the bridge takes the same choices from mod_sasl2_bind2's "enable-bind-features".
--
-- Files, by concern (loaded with module:require, as plugins/muc/mod_muc.lua loads its lib files):
-- this one holds sessions and their hooks (bind, carbons, CSI, presence, XEP-0198), the message
-- paths (hand-over, plans, fail-open) and the component's commands; mdm_link.lib.lua the link to
-- the component, its R9.6 limits and the event batches; mdm_push.lib.lua push registrations and
-- the R3.6 veto; mdm_mds.lib.lua R4.3 MDS in PEP; mdm_planned.lib.lua IMs delivered on a plan,
-- for the read state; mdm_bind2.lib.lua Bind2 inline choices (R9.11); mdm_config.lib.lua the
-- checks at load. The lib files sit beside this one (plugin_paths, or the module's folder).
--
-- Options: mdm_component (default "mdm." .. host), mdm_ack_timeout (default 10),
-- mdm_batch_size (events per stanza to the component, default 100), mdm_batch_bytes (default
-- 262144), mdm_max_depth (default 1000), mdm_push_while_active ("none", the default: no push
-- while the user is active elsewhere; "silent": a push without body or sender, which wakes the
-- app to sync but shows nothing).

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

-- Issue 15, delivery plans. plan_neutral: the child namespaces that keep an IM plannable, as the
-- component sent them (nil: no plans). plans: bare JID -> { notify = {sid…}, silent = {…},
-- plain = {…}, expires = util.time.now() deadline }. plan_gen: bare JID -> a counter moved by every
-- event about the user, so an answer computed before the latest event is not taken as a plan.
local plan_neutral = nil;
local plans, plan_gen = {}, {};
-- deferred: bare JID -> { held record, … }: messages that came while the user had a plan but
-- earlier messages still waited for the component; they follow those, in order (flush_deferred).
local deferred = {};
local flush_deferred; -- below, with the incoming messages
local function drop_plan(bare)
	plans[bare] = nil;
	plan_gen[bare] = (plan_gen[bare] or 0) + 1;
	if deferred[bare] then flush_deferred(bare); end -- no plan for them any more: to the component
end
local function drop_plan_of(full_jid)
	if full_jid then drop_plan(jid_bare(full_jid)); end
end

-- The link to the component: whether it serves, the R9.6 limits, the event batches
-- (mdm_link.lib.lua).
local link = module:require("mdm_link")({ component_jid = component_jid, drop_plan_of = drop_plan_of });
local component_connected, warn_limited = link.component_connected, link.warn_limited;
local queue_event, flush_events, send_events = link.queue_event, link.flush_events, link.send_events;
local t_remove = table.remove;
local add_task = require "util.timer".add_task;

-- Short ids for sessions, so the component's <fanout/> and plans name targets compactly.
local by_sid = {};

-- ref -> { event, name, handler, at } for a held message (message-in), or
--        { session, stanza, at } for a stanza held on its way to a background session (session-out)
local pending = {};
local last_ref = 0;
-- Issue 15: messages to each user still waiting for the component; a plan is used only when
-- there are none, so an IM delivered on it never overtakes one handed over before it (later
-- ones are deferred until then).
local waiting = {};
local function release(ref)
	local p = pending[ref];
	pending[ref] = nil;
	local user = p and p.user;
	if user then
		local n = waiting[user] - 1;
		waiting[user] = n > 0 and n or nil;
	end
end
-- Stanzas the component (or the fail-open path) delivers: they pass our CSI filter untouched.
local bypass = setmetatable({}, { __mode = "k" });

-- R1.3: the component runs with MDM disabled (<mode value='stock'/>): sessions are still reported,
-- but messages stay with Prosody's own carbons and CSI, exactly as without the component.
local stock = false;
-- The component serves MDM: it copies and holds; Prosody's stock modules stand by.
local is_serving = link.is_serving;
local function mdm_on() return is_serving() and not stock; end

-- XEP-0357 push (mod_cloud_notify): who has a registration (R3.6, R7.1) and the veto on alerting
-- pushes while the user is active elsewhere (mdm_push.lib.lua). push_users (bare JID -> true) is
-- one table for good: read for every IM a user sends (sent_can_matter).
local push = module:require("mdm_push")({ mdm_on = mdm_on, component_connected = component_connected,
	send_events = send_events, queue_event = queue_event });
local push_users = push.users;
local apply_mode; -- below: switches every session to what mdm_on() says

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
	local refs, later = pending, deferred;
	pending, waiting, deferred = {}, {}, {};
	for _, ref in ipairs(in_order(refs)) do
		module:log("debug", "Delivering held message %s natively: %s", ref, reason);
		deliver_natively(refs[ref]);
	end
	for _, queue in pairs(later) do -- each user's after what was handed over for them
		for i = 1, #queue do deliver_natively(queue[i]); end
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
		if session.mdm_carbons or session.mdm_csi_state == "inactive" or session.hibernating then return true; end
	end
	return false;
end

-- R9.10: a message over the limits takes the native path while the component serves: it gets
-- the copies stock mod_carbons makes, as if MDM were not installed. mod_carbons (priority -0.5)
-- copies to the sessions with want_carbons, which are set for this one message and cleared again
-- right after mod_carbons ran (priority -0.55; a timer as well, should a handler in between stop
-- the event).
local function carbons_as_stock(bare, on)
	local user = bare_sessions[bare];
	if not user then return; end
	for _, session in pairs(user.sessions) do
		session.want_carbons = (on or not mdm_on()) and session.mdm_carbons or nil;
	end
end
local function native_with_stock_carbons(event, bare)
	carbons_as_stock(bare, true);
	event.mdm_stock_carbons = bare;
	add_task(0, function() carbons_as_stock(bare, false); end);
end
local function end_stock_carbons(event)
	if event.mdm_stock_carbons then carbons_as_stock(event.mdm_stock_carbons, false); end
end
for _, name in ipairs({ "message/bare", "message/full", "pre-message/bare", "pre-message/full", "pre-message/host" }) do
	module:hook(name, end_stock_carbons, -0.55);
end

-- Groupchat, headline and error messages are never copied (docs/bridge-protocol.md): they take
-- the native path at once and reach a background session through the hold filter.
local native_types = { groupchat = true, headline = true, error = true };

-- Issue 15: an IM the user's plan may carry: chat, with a body, every child in plan_neutral.
local function plannable(stanza)
	if stanza.attr.type ~= "chat" then return false; end
	local body = false;
	local tags = stanza.tags;
	for i = 1, #tags do
		local tag = tags[i];
		local ns = tag.attr.xmlns or xmlns_client;
		if not plan_neutral[ns] then return false; end
		if tag.name == "body" and ns == xmlns_client then body = true; end
	end
	return body;
end

-- Deliver on the plan; false when none of its sessions is left (the caller asks the component).
local send_held, fanout_kinds; -- below, with the commands
local xmlns_sid = "urn:xmpp:sid:0";

-- R4.3 for IMs delivered on a plan: kept, and reported to the component only when a marker or an
-- MDS publish names one (mdm_planned.lib.lua).
local planned = module:require("mdm_planned")({ queue_event = queue_event });
local remember_planned = planned.remember;
local report_planned_marked, report_planned_published = planned.report_marked, planned.report_published;

-- Send held record p to the sessions of a fanout or plan ({ notify = {sid…}, silent = …,
-- plain = … }); true if any of them is still here.
local function fan_out(p, lists)
	local any = false;
	for attr, notify in pairs(fanout_kinds) do
		local sids = lists[attr];
		for i = 1, sids and #sids or 0 do
			local session = by_sid[sids[i]];
			if session and session.host == host then
				send_held(p, session, notify or nil);
				any = true;
			end
		end
	end
	return any;
end

local function deliver_on_plan(plan, event, bare)
	if not fan_out({ event = event }, plan) then return false; end
	-- R4.3: the archive's id of this IM (mod_mam added it, priority 0), kept for the read state
	local stanza = event.stanza;
	local id = stanza.attr.id;
	if id and stanza.attr.from then
		local sid = stanza:get_child("stanza-id", xmlns_sid);
		if sid and sid.attr.by == bare and sid.attr.id then
			remember_planned(bare, jid_bare(stanza.attr.from), id, sid.attr.id);
		end
	end
	return true;
end

-- Hand a held message to the component; false if it is over the limits (R9.6: the caller
-- delivers it natively, with stock carbons).
local function hand_over(p, bare)
	local ref = tostring(last_ref + 1);
	if not send_events(st.stanza("message-in", { ref = ref }), p.event.stanza) then return false; end
	last_ref = last_ref + 1;
	-- The answer becomes the user's plan only if no event about the user went to the component
	-- after this message (plan_gen); an IM's own answer changes nothing there.
	waiting[bare] = (waiting[bare] or 0) + 1;
	p.at, p.user, p.gen = now(), bare, plan_gen[bare] or 0;
	pending[ref] = p;
	return true;
end

local function on_plan(bare, stanza, name)
	local plan = plans[bare];
	return plan ~= nil and name == "message/bare" and now() < plan.expires and plannable(stanza) and plan or nil;
end

-- The user's deferred messages, once nothing of theirs waits for the component (or their plan is
-- gone): on the plan while it lasts, then to the component, in their order.
flush_deferred = function(bare)
	local queue = deferred[bare];
	deferred[bare] = nil;
	for i = 1, #queue do
		local p = queue[i];
		local plan = not waiting[bare] and on_plan(bare, p.event.stanza, p.name);
		if not (plan and deliver_on_plan(plan, p.event, bare)) and not hand_over(p, bare) then
			native_with_stock_carbons(p.event, bare);
			deliver_natively(p);
		end
	end
end

-- After a message's final answer: the user's deferred messages may follow now.
local function resume_user(p)
	local user = p.user;
	if user and not waiting[user] and deferred[user] then flush_deferred(user); end
end

local function incoming_handler(name)
	local handler;
	handler = function(event)
		if stock or not component_connected() then return; end -- fail open or MDM off: native delivery
		local stanza, origin = event.stanza, event.origin;
		if native_types[stanza.attr.type] then return; end
		if stanza.attr.to == nil then -- a message to one's own bare JID (RFC 6120 §10.3.3)
			stanza.attr.to = origin.username .. "@" .. origin.host;
		end
		local bare = jid_bare(stanza.attr.to);
		if not component_can_matter(bare) then return; end
		local p = { event = event, name = name, handler = handler };
		local queue = deferred[bare];
		if queue then -- behind the user's deferred messages, whatever it is
			queue[#queue + 1] = p;
			return true;
		end
		local plan = on_plan(bare, stanza, name);
		if plan then -- issue 15: no round trip
			if waiting[bare] then -- after what still waits for the component
				deferred[bare] = { p };
				return true;
			end
			if deliver_on_plan(plan, event, bare) then return true; end
		end
		if not hand_over(p, bare) then
			native_with_stock_carbons(event, bare); -- over the limits (R9.6)
			return;
		end
		return true;
	end
	return handler;
end
module:hook("message/bare", incoming_handler("message/bare"), -0.4);
module:hook("message/full", incoming_handler("message/full"), -0.4);

-- Outgoing: a copy of what a local session sends; the message itself goes on natively. Taken
-- just before mod_carbons (-0.5), which copies nothing while the component serves, unless the
-- message is over the limits (then stock carbons copy it, R9.6 / R9.10).
-- Issue 15: what a user sends matters to the component only if the user has another session
-- (R2.3 copies, R3.1 the active client), a push registration (R3.6 even with one session), or it
-- is a read marker (R4.3 MDS) or a Jingle Message Initiation (R9.4); anything else is not handed
-- over at all. A session that binds later learns the others' activity from their presence (bind).
local xmlns_markers, xmlns_jmi = "urn:xmpp:chat-markers:0", "urn:xmpp:jingle-message:0";
local function sent_can_matter(origin, stanza)
	local bare = origin.username .. "@" .. origin.host;
	if push_users[bare] then return true; end
	local user = bare_sessions[bare];
	if user and next(user.sessions, next(user.sessions)) ~= nil then return true; end
	for _, tag in ipairs(stanza.tags) do
		local ns = tag.attr.xmlns;
		if ns == xmlns_markers or ns == xmlns_jmi then return true; end
	end
	return false;
end

local function outgoing_handler(event)
	local origin = event.origin;
	if event.stanza:get_child("body") then origin.mdm_active_at = now(); end
	if stock or not component_connected() or not origin.full_jid or not sent_can_matter(origin, event.stanza) then
		return;
	end
	report_planned_marked(origin.username .. "@" .. origin.host, event.stanza); -- R4.3, before the marker
	if not send_events(st.stanza("message-out", { jid = origin.full_jid }), event.stanza) then
		native_with_stock_carbons(event, jid_bare(origin.full_jid));
	end
end
module:hook("pre-message/bare", outgoing_handler, -0.45);
module:hook("pre-message/full", outgoing_handler, -0.45);
module:hook("pre-message/host", outgoing_handler, -0.45);

-- Sessions, carbons, presence.
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

-- The session's available presence as the component learns it in a sync: idle is how many
-- seconds ago it last sent available presence or a message with a body, so a restarted component
-- knows the active client again (R3.1).
-- The events of a sync are written as text: building and serialising three stanza objects per
-- session made a sync of 10,000 sessions cost Prosody ~2 s of CPU (issue 15, P4).
local xml_escape = st.xml_escape;
local function presence_xml(session, jid)
	local active_at, caps = session.mdm_active_at, caps_node(session.presence);
	return "<presence jid='" .. jid .. "' available='true' priority='" .. tostring(session.priority or 0) .. "'"
		.. (caps and " caps='" .. xml_escape(caps) .. "'" or "")
		.. (active_at and string.format(" idle='%.3f'", now() - active_at) or "") .. "/>";
end

local function session_events(session)
	local jid = xml_escape(session.full_jid);
	queue_event("<bind jid='" .. jid .. "' sid='" .. sid_of(session) .. "'/>");
	if session.mdm_carbons then queue_event("<carbons jid='" .. jid .. "' enabled='true'/>"); end
	local csi = session.mdm_csi_state;
	if csi then queue_event("<csi jid='" .. jid .. "' state='" .. csi .. "'/>"); end
	if session.presence then queue_event(presence_xml(session, jid)); end
	if session.hibernating then queue_event("<hibernated jid='" .. jid .. "' state='true'/>"); end
end

module:hook("resource-bind", function(event)
	local session = event.session;
	local sid = sid_of(session);
	if not component_connected() then return; end
	send_events(st.stanza("bind", { jid = session.full_jid, sid = sid }));
	-- Issue 15: a user alone on one session does not report the IMs it sends (sent_can_matter);
	-- now that there are two, the others' last activity counts again (R3.1): reported as a sync does.
	local user = bare_sessions[session.username .. "@" .. session.host];
	for _, other in pairs(user and user.sessions or {}) do
		if other ~= session and other.presence and other.mdm_active_at and other.full_jid then
			queue_event(presence_xml(other, xml_escape(other.full_jid))); -- the bind dropped the plan
		end
	end
end);

module:hook("resource-unbind", function(event)
	local session = event.session;
	if session.mdm_sid then by_sid[session.mdm_sid] = nil; end
	if not component_connected() then return; end
	send_events(st.stanza("unbind", { jid = session.full_jid }));
end);

-- XEP-0280: the client's choice is kept in mdm_carbons; mod_carbons' want_carbons follows it only
-- while the component is not serving (R9.10). However the client chose (the iq below, or inline in
-- a Bind2 request: mdm_bind2.lib.lua, R9.11), it is the same choice.
local function choose_carbons(session, enable)
	session.mdm_carbons = enable and xmlns_carbons or nil;
	session.want_carbons = not mdm_on() and session.mdm_carbons or nil;
	if component_connected() then
		send_events(st.stanza("carbons", { jid = session.full_jid, enabled = enable and "true" or "false" }));
	end
end

-- XEP-0280 enable/disable, answered here before mod_carbons (which advertises the feature).
local function toggle_carbons(event)
	local origin, stanza = event.origin, event.stanza;
	choose_carbons(origin, stanza.tags[1].name == "enable");
	origin.send(st.reply(stanza));
	return true;
end
module:hook("iq-set/self/" .. xmlns_carbons .. ":enable", toggle_carbons, 1);
module:hook("iq-set/self/" .. xmlns_carbons .. ":disable", toggle_carbons, 1);
module:depends("carbons");

-- XEP-0352 CSI, as mod_csi re-fires the client's nonzas. The session's state is kept so a
-- reconnecting component learns it with the other session facts. While a session is in the
-- background, every stanza for it goes to the component, which holds or flushes (R5); this
-- filter runs before mod_smacks' queue (-999) so held stanzas are not counted as sent.
-- R5.7: a hibernated session (XEP-0198) is held the same way, whatever its CSI state, so what
-- the component holds never reaches mod_smacks' queue or mod_cloud_notify.
local function hold_filter(stanza, session)
	if bypass[stanza] or not st.is_stanza(stanza) or stanza.attr.xmlns ~= nil
		or (session.mdm_csi_state ~= "inactive" and not session.hibernating) or stock or not component_connected() then
		return stanza;
	end
	local name = stanza.name;
	if name ~= "message" and name ~= "presence" and name ~= "iq" then return stanza; end
	local ref = tostring(last_ref + 1);
	if not send_events(st.stanza("session-out", { ref = ref, jid = session.full_jid }), stanza) then
		return stanza; -- over the limits (R9.6): sent to the session now
	end
	last_ref = last_ref + 1;
	pending[ref] = { session = session, stanza = st.clone(stanza), at = now() };
	return nil;
end

-- Who holds a background session's stanzas: the bridge's hold filter while the component serves,
-- Prosody's own mod_csi_simple otherwise (R9.10). mod_csi_simple's functions are globals of its
-- module environment.
local csi_simple_timer = require "util.timer";
local function csi_simple() return modulemanager.get_module(host, "csi_simple"); end

local function bridge_holds(session)
	local mod = csi_simple();
	if mod and mod.disable_optimizations then mod.disable_optimizations(session); end
	if session.csi_resume then -- its "back to inactive after a flush" timer would pause writes
		csi_simple_timer.stop(session.csi_resume);
		session.csi_resume = nil;
	end
	filters.add_filter(session, "stanzas/out", hold_filter, 500);
end

-- R9.10 / R9.11: stock Prosody holds nothing for a session that chose <inactive/> inline in Bind2
-- (mod_sasl2_bind2 sets its state, mod_csi_simple never hears of it), so neither does the bridge
-- then: mod_csi_simple takes over only sessions that sent the nonza.
local function stock_holds(session)
	filters.remove_filter(session, "stanzas/out", hold_filter);
	local mod = csi_simple();
	if mod and mod.enable_optimizations and not session.mdm_csi_inline then mod.enable_optimizations(session); end
end

-- The session's CSI state, however it was chosen (a nonza, or inline in Bind2, R9.11).
local function choose_csi(session, state)
	session.mdm_csi_state = state;
	if state == "inactive" then
		if mdm_on() then bridge_holds(session); end
	elseif not session.hibernating then
		filters.remove_filter(session, "stanzas/out", hold_filter);
	end
	if component_connected() then
		send_events(st.stanza("csi", { jid = session.full_jid, state = state }));
	end
end

-- Runs after mod_csi_simple's own handlers (priority 0), so while the component serves it undoes
-- what they just did.
local function csi_handler(state)
	return function(event)
		local session = event.origin;
		session.mdm_csi_inline = nil; -- a nonza: mod_csi_simple heard it too (stock_holds)
		choose_csi(session, state);
	end
end
module:depends("csi");
module:depends("csi_simple");
module:hook("csi-client-active", csi_handler("active"), -1);
module:hook("csi-client-inactive", csi_handler("inactive"), -1);
-- R9.11: SASL2 + Bind2 logins choose carbons and the CSI state inline (mdm_bind2.lib.lua).
module:require("mdm_bind2")({ choose_carbons = choose_carbons, choose_csi = choose_csi });

-- mod_csi_simple pauses a background session's writes again once its connection drained; not
-- while the bridge holds that session's stanzas.
module:hook("c2s-ondrain", function(event)
	local session = event.session;
	if session.mdm_csi_state == "inactive" and mdm_on() then return true; end
end, 1);

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
-- R5.7: from here on the hold filter hands what the session would be sent to the component, which
-- holds it while the user has another active client (and lets it through as stock otherwise).
-- Priority 1: before mod_cloud_notify's handler pushes for what mod_smacks has not had acked.
module:hook("smacks-hibernation-start", function(event)
	local session = event.origin;
	if not session.full_jid then return; end
	if mdm_on() then filters.add_filter(session, "stanzas/out", hold_filter, 500); end
	if component_connected() then
		send_events(st.stanza("hibernated", { jid = session.full_jid, state = "true" }));
		flush_events(); -- before anything else is routed to the session
	end
end, 1);

module:hook("smacks-hibernation-end", function(event)
	local session = event.resumed or event.origin;
	-- mod_smacks clears `hibernating` after this event: the hold filter must not take what the
	-- resumed session is sent meanwhile (R5.7: the component flushes on <hibernated state='false'/>)
	session.hibernating = nil;
	-- mod_smacks gives the resumed session the new connection's filter list: ours is gone, and a
	-- session still in the background would get native stanzas ahead of what the component holds.
	if mdm_on() and session.mdm_csi_state == "inactive" then
		filters.add_filter(session, "stanzas/out", hold_filter, 500);
	end
	if component_connected() and session.full_jid then
		send_events(st.stanza("hibernated", { jid = session.full_jid, state = "false" }));
	end
end);

-- R4.3: XEP-0490 Message Displayed Synchronization in the user's PEP (mdm_mds.lib.lua).
local mds_publish = module:require("mdm_mds")({ component_connected = component_connected,
	send_events = send_events, report_planned_published = report_planned_published });

-- Commands from the component, accepted only from the configured component JID.
local function normalise(el, parent_ns)
	local ns = el.attr.xmlns or parent_ns;
	if el.attr.xmlns == parent_ns then el.attr.xmlns = nil; end
	for _, child in ipairs(el.tags) do normalise(child, ns); end
end

-- Send a held stanza itself, plus the notification hint if any. The hint is added for this one
-- send and taken off again: session.send has serialised (or, mod_smacks, cloned) the stanza by
-- the time it returns, so no copy is made per device. The two hints are built once and never
-- changed (util.stanza's :tag() validates names and attributes on every call, issue 15).
local hints = {
	["true"] = st.stanza("notify", { xmlns = xmlns_notify, value = "true" });
	["false"] = st.stanza("notify", { xmlns = xmlns_notify, value = "false" });
};
send_held = function(p, session, notify)
	local held = p.event and p.event.stanza or p.stanza;
	local old_xmlns = held.attr.xmlns;
	held.attr.xmlns = nil;
	local hint = notify and hints[notify];
	if hint then
		held[#held + 1] = hint;
		held.tags[#held.tags + 1] = hint;
	end
	bypass[held] = true;
	session.send(held);
	if hint then
		t_remove(held.tags);
		t_remove(held);
	end
	held.attr.xmlns = old_xmlns;
end

local function finish(ref, p, reached, held_by_component)
	release(ref);
	-- An ack whose deliveries all missed (the sessions left meanwhile) is a route: offline
	-- storage keeps the message (R2.2). held="true": the component keeps it in a buffer.
	if not reached and not p.session and not held_by_component then
		deliver_natively(p);
	end
	resume_user(p);
end

fanout_kinds = { notify = "true", silent = "false", plain = false };

-- Issue 15: a fanout the component marked as the user's plan, kept if no event about the user
-- went to the component since the message it answers was handed over.
local function sid_list(list)
	local out = {};
	if list then for sid in list:gmatch("%S+") do out[#out + 1] = sid; end end
	return out;
end
local function take_plan(cmd, p, lists)
	local seconds = cmd.attr.plan == "inf" and math.huge or tonumber(cmd.attr.plan);
	local user = p.user;
	if not (seconds and user and plan_neutral and (plan_gen[user] or 0) == p.gen and user == cmd.attr.user) then return; end
	lists.expires = now() + seconds;
	plans[user] = lists;
end

module:hook("message/host", function(event)
	local stanza = event.stanza;
	local commands = stanza:get_child("commands", xmlns_bridge);
	if not commands then return; end
	if stanza.attr.from ~= component_jid then
		warn_limited("forged commands", "Ignored MDM bridge commands (%d in the last minute; latest from %s): only %s may send them",
			tostring(stanza.attr.from), component_jid);
		return true;
	end
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
					-- kept on the held record: the component may split a message's deliveries
					-- and its ack over several command stanzas
					if p then p.reached = true; end
				elseif p then
					send_held(p, session, cmd.attr.notify);
					p.reached = true;
				else
					module:log("warn", "MDM deliver command without a stanza to deliver");
				end
			end
		elseif name == "fanout" then
			-- The held message to several sessions by id, then done with it (an ack).
			local p = ref and pending[ref];
			if p then
				local lists = { notify = sid_list(cmd.attr.notify), silent = sid_list(cmd.attr.silent),
					plain = sid_list(cmd.attr.plain) };
				local any = fan_out(p, lists);
				if any and cmd.attr.plan then take_plan(cmd, p, lists); end
				finish(ref, p, any or p.reached, false);
			end
		elseif name == "route" then
			local p = ref and pending[ref];
			if p then
				release(ref);
				deliver_natively(p);
				resume_user(p);
			end
		elseif name == "ack" then
			local p = ref and pending[ref];
			if p then finish(ref, p, p.reached, cmd.attr.held == "true"); end
		elseif name == "mds-publish" then
			mds_publish(cmd.attr.user, cmd.attr.peer, cmd.attr["stanza-id"]);
		elseif name == "mode" then
			-- R1.3: MDM switched off (stock) or on (mdm) in the component's config
			local off = cmd.attr.value == "stock";
			if off ~= stock then
				stock = off;
				apply_mode();
				module:log("info", "MDM %s by the component's configuration", off
					and "disabled: Prosody's own carbons and CSI serve" or "enabled again");
			end
		elseif name == "plan-rules" then
			-- issue 15: which IMs plans may carry; plans made under earlier rules are dropped
			plan_neutral = {};
			for ns in (cmd.attr.neutral or ""):gmatch("%S+") do plan_neutral[ns] = true; end
			plans = {};
		elseif name == "active" then
			-- R3.6: who is active for this push user, and for how long
			local user, seconds = cmd.attr.user, tonumber(cmd.attr["for"]);
			if user then push.set_active(user, cmd.attr.jid and seconds); end
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
		local late = 0;
		for _, ref in ipairs(in_order(pending)) do
			local p = pending[ref];
			if p and p.at < limit then
				release(ref);
				late = late + 1;
				deliver_natively(p);
				resume_user(p);
			end
		end
		if late > 0 then -- one line a second at most, however many
			module:log("warn", "MDM component %s did not answer for %d message(s) within %ds; delivering them natively",
				component_jid, late, ack_timeout);
		end
	end
	return 1;
end);

-- R9.10 / R1.3: switch every session between the component's service and Prosody's stock carbons
-- and CSI, as the component comes and goes or MDM is switched off and on.
apply_mode = function()
	local on = mdm_on();
	plans = {}; -- issue 15: made under the other mode
	for _, user in pairs(prosody.hosts[host].sessions or {}) do
		for _, session in pairs(user.sessions) do
			session.want_carbons = not on and session.mdm_carbons or nil;
			if session.mdm_csi_state == "inactive" then
				if on then bridge_holds(session); else stock_holds(session); end
			end
		end
	end
end

local function set_serving(on)
	link.set_serving(on);
	stock = false; -- a (re)connecting component says again if MDM is off
	plan_neutral = nil; -- issue 15: a (re)connected component sends its rules again
	push.reset(); -- R3.6: a (re)connected component tells again; a gone one vetoes nothing (R9.10)
	apply_mode();
end

-- The component host starts after this VirtualHost: attach to its events when it appears.
local function attach(h)
	if h ~= component_jid then return; end
	local comp = module:context(component_jid);
	for _, kind in ipairs({ "message", "presence", "iq" }) do
		for _, to in ipairs({ "bare", "full", "host" }) do
			comp:hook(kind .. "/" .. to, link.guard_component, 10);
		end
	end
	comp:hook("component-authenticated", function()
		-- Tell the (re)connected component everything it needs: it starts from a clean slate.
		link.reset(); -- nothing queued before this connection belongs to it
		set_serving(true); -- from here on the component copies and holds; stock modules stand by
		queue_event("<sync plans='1'/>"); -- issue 15: this bridge delivers on plans
		for _, user in pairs(prosody.hosts[host].sessions) do
			for _, session in pairs(user.sessions) do
				if session.full_jid then session_events(session); end
			end
		end
		push.sync(); -- R3.6, R7.1: the users with a push registration
		flush_events();
		module:log("info", "MDM component %s connected; reported the sessions of %s", component_jid, host);
	end);
	comp:hook("component-disconnected", function()
		module:log("warn", "MDM component %s disconnected; serving with Prosody's own carbons and CSI until it is back",
			component_jid);
		-- Stock behaviour first, so what was held is delivered as stock Prosody would (R9.10).
		set_serving(false);
		fail_open_all("component disconnected");
	end);
end
if prosody.hosts[component_jid] then attach(component_jid); end
module:hook_global("host-activated", attach);

-- Issue 12: obvious misconfiguration is an error at load (mdm_config.lib.lua).
local check_config = module:require("mdm_config")({ component_jid = component_jid });

function module.load()
	check_config();
	-- Loaded while the component is connected (a module reload): it serves again from its next
	-- handshake; until then, stock behaviour.
	set_serving(false);
end

function module.unload()
	set_serving(false);
	fail_open_all("module unloaded");
end
