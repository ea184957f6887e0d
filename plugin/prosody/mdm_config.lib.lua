-- mod_mdm_bridge: configuration checks at load (issue 12).
--
-- Obvious misconfiguration is an error in the log at load, not a bridge that silently never
-- serves: no Component for the MDM component's JID, or modules that hold, drop or reorder what
-- the component holds (the stock mod_carbons and mod_csi_simple are fine: the bridge loads them
-- itself for fail-open, R9.10).
--
-- Loaded by mod_mdm_bridge.lua with module:require; returns check_config().

local modulemanager = require "core.modulemanager";

return function(bridge)
	local host, component_jid = module.host, bridge.component_jid;

	local fighting = {
		csi_battery_saver = "holds and reorders the stanzas the component holds";
		throttle_presence = "holds presence for background sessions itself";
		filter_chatstates = "drops chat states for background sessions";
		csi_pump = "a second CSI queue beside the component's";
	};

	local function check_config()
		local configmanager = require "core.configmanager";
		if configmanager.get(component_jid, "component_module") ~= "component" then
			module:log("error", "No Component %q in the config: the MDM component cannot connect and users get"
				.. " stock delivery; add Component %q with a component_secret (\"mdm-component setup prosody\""
				.. " prints it), or set mdm_component to the component's JID", component_jid, component_jid);
		end
		local enabled = {};
		local lists = { configmanager.get("*", "modules_enabled") or {}, module:get_option_array("modules_enabled", {}) };
		for _, list in ipairs(lists) do
			for _, name in ipairs(list) do enabled[name] = true; end
		end
		for name, why in pairs(fighting) do
			if enabled[name] or modulemanager.is_loaded(host, name) then
				module:log("error", "mod_%s is enabled beside mod_mdm_bridge: disable it, it %s; the bridge uses"
					.. " mod_csi_simple while the MDM component is down and holds stanzas itself while it serves",
					name, why);
			end
		end
	end

	return check_config;
end
