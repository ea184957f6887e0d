-- mod_mdm_bridge: read state across the two standards (R4.3): XEP-0490 Message Displayed
-- Synchronization in the user's PEP (mod_pep). The component turns a <displayed/> marker into a
-- publish here (the node is created as XEP-0490 asks: whitelist access, items kept); and a
-- client's own publish is reported to it, so clients that only do markers get a <displayed/>. Our
-- own publishes are not reported back.
--
-- Loaded by mod_mdm_bridge.lua with module:require; `bridge` holds component_connected,
-- send_events and report_planned_published (issue 15: an IM delivered on a plan is reported right
-- before the publish that names it). Returns mds_publish(user, peer, stanza_id), for the
-- component's <mds-publish/> command.

local st = require "util.stanza";
local jid_split = require "util.jid".split;
local modulemanager = require "core.modulemanager";

return function(bridge)
	local host = module.host;
	local component_connected, send_events = bridge.component_connected, bridge.send_events;
	local report_planned_published = bridge.report_planned_published;

	local xmlns_mds, xmlns_sid = "urn:xmpp:mds:displayed:0", "urn:xmpp:sid:0";
	local mds_publishing = false;
	local function mds_publish(user, peer, stanza_id)
		local pep = modulemanager.get_module(host, "pep");
		local username, user_host = jid_split(user or "");
		if not (pep and pep.get_pep_service and username and user_host == host and peer and stanza_id) then return; end
		local service = pep.get_pep_service(username);
		if not service.nodes[xmlns_mds] then
			service:create(xmlns_mds, true, { access_model = "whitelist", persist_items = true,
				max_items = "max", send_last_published_item = "never" });
		end
		local item = st.stanza("item", { xmlns = "http://jabber.org/protocol/pubsub", id = peer })
			:tag("displayed", { xmlns = xmlns_mds })
				:tag("stanza-id", { xmlns = xmlns_sid, id = stanza_id, by = user }):up():up();
		mds_publishing = true;
		local ok, err = service:publish(xmlns_mds, true, peer, item);
		mds_publishing = false;
		if not ok then module:log("warn", "MDM: MDS publish for %s (%s) failed: %s", user, peer, tostring(err)); end
	end
	module:handle_items("pep-service", function(event)
		local service = event.item.service;
		service.events.add_handler("item-published/" .. xmlns_mds, function(published)
			if mds_publishing or not component_connected() then return; end
			local sid = published.item and published.item:find("{" .. xmlns_mds .. "}displayed/{" .. xmlns_sid .. "}stanza-id");
			local actor = published.actor;
			if sid and sid.attr.id and published.id then
				report_planned_published(service.config.jid, sid.attr.id); -- R4.3, before the publish
				send_events(st.stanza("mds", { jid = service.config.jid, peer = published.id, ["stanza-id"] = sid.attr.id,
					publisher = type(actor) == "string" and actor:find("/", 1, true) and actor or nil }));
			end
		end);
	end, function() end, true);

	return mds_publish;
end
