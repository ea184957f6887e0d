-- mod_mdm_bridge: what delivery plans owe the read state (issue 15, R4.3).
--
-- An IM delivered on a plan never went to the component, whose read state needs (user, peer,
-- message id) <-> archive stanza-id only when the user marks one of them displayed, or publishes
-- MDS for one. Reporting each IM cost a write per IM and woke the component for nothing (issue
-- 15: +20 ms p99 at 500 IM/s here), so the bridge keeps the last planned_max of them and reports
-- one (<planned/>) right before the marker (message-out) or the MDS publish (mds) that names it.
-- Kept as "user\0peer\0id" -> stanza-id, "user\0stanza-id" -> "user\0peer\0id", and a ring of
-- the keys in the order they came: remember() runs for every IM delivered on a plan, two strings
-- and no table per IM.
--
-- Loaded by mod_mdm_bridge.lua with module:require; `bridge.queue_event` sends the <planned/>.

local st = require "util.stanza";
local jid_bare = require "util.jid".bare;

return function(bridge)
	local queue_event = bridge.queue_event;
	local planned_max = 10000;
	local planned_sid, planned_key, ring_id, ring_sid, planned_next = {}, {}, {}, {}, 0;
	local function remember_planned(user, peer, id, sid)
		planned_next = planned_next % planned_max + 1;
		local old_id, old_sid = ring_id[planned_next], ring_sid[planned_next];
		if old_id then planned_sid[old_id], planned_key[old_sid] = nil, nil; end
		local by_id, by_sid = user .. "\0" .. peer .. "\0" .. id, user .. "\0" .. sid;
		ring_id[planned_next], ring_sid[planned_next] = by_id, by_sid;
		planned_sid[by_id], planned_key[by_sid] = sid, by_id;
	end
	local function report_planned(by_id)
		local sid = by_id and planned_sid[by_id];
		if not sid then return; end
		local user, peer, id = by_id:match("^([^%z]*)%z([^%z]*)%z(.*)$");
		planned_sid[by_id], planned_key[user .. "\0" .. sid] = nil, nil;
		queue_event(tostring(st.stanza("planned", { to = user, from = peer, id = id, ["stanza-id"] = sid })));
	end
	local function report_planned_marked(user, stanza)
		local displayed = stanza:get_child("displayed", "urn:xmpp:chat-markers:0");
		if displayed and displayed.attr.id and stanza.attr.to then
			report_planned(user .. "\0" .. jid_bare(stanza.attr.to) .. "\0" .. displayed.attr.id);
		end
	end
	local function report_planned_published(user, sid)
		report_planned(planned_key[user .. "\0" .. sid]);
	end

	return { remember = remember_planned, report_marked = report_planned_marked,
		report_published = report_planned_published };
end
