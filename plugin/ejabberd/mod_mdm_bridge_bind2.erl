%%%-------------------------------------------------------------------------------------------------
%%% mod_mdm_bridge_bind2: modern logins for the MDM bridge (R9.11, issue 21; docs/modern-logins.md).
%%%
%%% Today's phones (Conversations, Monal) log in with SASL2 (XEP-0388) and Bind2 (XEP-0386) and
%%% enable carbons inside the bind request, never sending the XEP-0280 iq. ejabberd has both built
%%% in from 24.02 (not 23.01): mod_carboncopy enables carbons inline in its c2s_handle_bind2_inline
%%% handler (priority 50) by calling its enable/4 directly, so the bridge's carbons iq handler never
%%% runs. This module takes the same hook after it (priority 60), in the session's own c2s process,
%%% and makes the same choice the bridge makes for the iq (mod_mdm_bridge:iq_carbons/1): the
%%% session is an MDM client (R9.1), gets the hint (R3.2), silent mode (R5.1), the push veto (R3.6),
%%% and mod_carboncopy's flag only while the component is not serving (R9.10, fail-open is stock).
%%%
%%% ejabberd 24.12 lists only carbons and XEP-0198 among its Bind2 inline features (no CSI): a phone
%%% sends its CSI nonza after binding, which the bridge sees as for any session
%%% (c2s_authenticated_packet). Should a later ejabberd take the CSI state inline (a #csi{} among
%%% the inline elements), it is handed to the bridge the same way as the nonza.
%%%
%%% Inline resumption (XEP-0198 in SASL2: mod_stream_mgmt's c2s_handle_sasl2_inline) runs the same
%%% hooks as a classic <resume/> (c2s_copy_session, sm_register_connection_hook,
%%% c2s_session_resumed), so the resumed session keeps its MDM state with no code here (R5.7). A
%%% FAST login (XEP-0484) is only another way to authenticate.
%%%
%%% Hooks are registered by mod_mdm_bridge (add_hooks/del_hooks); on 23.01 the hook never runs.
%%%-------------------------------------------------------------------------------------------------
-module(mod_mdm_bridge_bind2).

-export([add_hooks/1, del_hooks/1, c2s_handle_bind2_inline/1]).

-include("xmpp.hrl").

-define(PRIORITY, 60).  % after mod_carboncopy's (50): its inline enable is undone while MDM serves

add_hooks(Host) ->
    ejabberd_hooks:add(c2s_handle_bind2_inline, Host, ?MODULE, c2s_handle_bind2_inline, ?PRIORITY).

del_hooks(Host) ->
    ejabberd_hooks:delete(c2s_handle_bind2_inline, Host, ?MODULE, c2s_handle_bind2_inline, ?PRIORITY).

%% R9.11: what the Bind2 request chose inline, given to the bridge as the iq and the nonza would
%% give it. The accumulator ({State, Els, Results}) goes on; the state may carry the CSI choice.
c2s_handle_bind2_inline({#{user := U, server := S, resource := R} = State, Els, Results}) ->
    JID = jid:make(U, S, R),
    case lists:keyfind(carbons_enable, 1, Els) of
        #carbons_enable{} = Enable ->
            %% the bridge's own XEP-0280 handler: the session row, the 'mdm' flag in ejabberd_sm's
            %% session info (cluster-wide, R9.8), stock carbons per mode, the <carbons/> event;
            %% its iq result goes nowhere (mod_carboncopy answers the Bind2 request itself)
            _ = mod_mdm_bridge:iq_carbons(#iq{type = set, id = <<"bind2">>, from = JID, to = jid:remove_resource(JID),
                                              sub_els = [Enable]}),
            ok;
        false -> ok
    end,
    State1 = case lists:keyfind(csi, 1, Els) of
                 #csi{} = Csi -> mod_mdm_bridge:c2s_authenticated_packet(State#{jid => JID}, Csi);
                 false -> State
             end,
    {State1, Els, Results};
c2s_handle_bind2_inline(Acc) ->
    Acc.
