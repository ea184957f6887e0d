-- mod_mdm_bridge: modern logins (R9.11, issue 21; docs/modern-logins.md).
--
-- Today's phones (Conversations, Monal) log in with SASL2 (XEP-0388) and Bind2 (XEP-0386) and
-- choose their features inside the bind request: carbons (XEP-0280) and their CSI state
-- (XEP-0352), never sending the enable iq or a CSI nonza. prosody-modules' mod_sasl2_bind2 fires
-- "enable-bind-features" for what the request carries and, at priority 10, sets the session's
-- want_carbons and state itself. The bridge takes the same event after it and makes the same
-- choice as for the iq and the nonzas: the session is an MDM client (R9.1), gets the hint (R3.2),
-- silent mode (R5.1) and the push veto (R3.6); want_carbons is put back to what fail-open needs
-- (R9.10: stock carbons only while the component is not serving).
--
-- Stream management inline (mod_sasl2_sm) needs no code here: an inline <enable/> makes the
-- session resumable as the nonza does, and an inline <resume/> ends in mod_smacks'
-- "smacks-hibernation-end" as a classic one (R5.7). A FAST reconnect (XEP-0484, mod_sasl2_fast)
-- is only another way to authenticate: what follows it (a Bind2 session, or a resumption) is seen
-- as above.
--
-- Loaded by mod_mdm_bridge.lua with module:require; `bridge` holds its choose_carbons(session,
-- enable) and choose_csi(session, state).

local xmlns_carbons = "urn:xmpp:carbons:2";
local xmlns_csi = "urn:xmpp:csi:0";
local csi_states = { active = true, inactive = true };

return function(bridge)
	module:hook("enable-bind-features", function(event)
		local session = event.session;
		-- the Bind2 request: `request` in prosody-modules since 2023, `features` (its child) before
		local request = event.request or event.features;
		if not (session and session.full_jid and request) then return; end
		if request:get_child("enable", xmlns_carbons) then
			bridge.choose_carbons(session, true);
		end
		local csi = request:child_with_ns(xmlns_csi);
		if csi and csi_states[csi.name] then
			session.mdm_csi_inline = true; -- stock Prosody does not hold for it (stock_holds)
			bridge.choose_csi(session, csi.name);
		end
	end, 1); -- after mod_sasl2_bind2's own handler (10)
end
