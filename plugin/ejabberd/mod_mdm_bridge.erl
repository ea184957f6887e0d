%%% mod_mdm_bridge: relays this host's sessions and messages to the MDM component (ejabberd 23.01).
%%%
%%% The bridge decides nothing: it tells the component (an XEP-0114 component, by default
%%% mdm.<host>) about sessions, carbons, presence and CSI, hands it every message for a local
%%% user, copies what local sessions send, and carries out the component's commands. The protocol
%%% is docs/bridge-protocol.md, the same one the Prosody bridge speaks.
%%%
%%% Where it sits:
%%%  * incoming messages are taken in sm_receive_packet (priority 100, after mod_mam's stanza id
%%%    at 50), before ejabberd picks sessions or offline storage. The user's privacy/blocking
%%%    list is checked first (a blocked message takes the native path and is bounced there, R2.6),
%%%    and the message is archived once by mod_mam, as ejabberd would on delivery (the
%%%    component's deliveries go to one session each and must not be archived once per device),
%%%    before it is handed over. Not in the sender's process, which would then wait for every
%%%    archive write of its recipients (issue 15): by one of ?ARCHIVERS archive writers per node,
%%%    the same one for all of a user's messages, so they stay in order.
%%%  * "route" gives the message back to ejabberd_sm (marked, so it is not taken twice):
%%%    RFC 6121 delivery or offline storage, exactly as without the bridge.
%%%  * a session in the background (CSI inactive) has every stanza for it taken in
%%%    c2s_filter_send and handed over as session-out (R5); so has a hibernated one (XEP-0198
%%%    pending, R5.7), before mod_stream_mgmt queues it and mod_push pushes for it.
%%%  * phones (issue 11): mod_push has no veto, so while the component says a push user has an
%%%    active client (<active/>) the bridge archives that user's messages itself in
%%%    store_mam_message (before mod_push) and ends the hook: no alerting push (R3.6). XEP-0490
%%%    MDS is published and reported through mod_pubsub (R4.3).
%%%  * fail-open is stock (R9.10): ejabberd's own mod_carboncopy (XEP-0280) and mod_client_state
%%%    (XEP-0352) stay loaded and serve whenever the component does not. The bridge answers the
%%%    carbons iq itself and keeps each session's choice; mod_carboncopy copies by the
%%%    'carboncopy' key of ejabberd_sm's session info, which the bridge sets only while it is in
%%%    stock mode (each session's own process flips it when the mode changes). The hold filter
%%%    runs before mod_client_state's and takes a background session's stanzas only while the
%%%    component serves; otherwise mod_client_state queues them as it would without us.
%%%  * limits (docs/operations.md): a message deeper than ?MAX_DEPTH or larger than ?MAX_EVENT
%%%    bytes is not handed over (native path: RFC 6121 routing, no carbons while the component
%%%    serves); an <events/> stanza carries at most batch_size events and about ?MAX_BATCH bytes.
%%%
%%% Fail open (nothing is lost): while the component is not connected every message takes the
%%% native path; messages handed over but not answered are delivered natively when the component
%%% drops or does not answer within ack_timeout seconds.
%%%
%%% Clusters (R9.8), the way mod_carboncopy is cluster-correct: what other nodes must know about a
%%% session lives in ejabberd_sm's session info (written by the session's own process, read on
%%% every node), and deliveries go to session pids, which are reachable from any node.
%%%  * session ids (sid) encode the session's pid; refs carry this node's id (ejabberd_cluster:
%%%    node_id/0): both are unique in the cluster.
%%%  * each node reports its own sessions; its events carry node='<node>' and its <sync/> covers
%%%    that node only. The component answers with commands carrying the same node attribute; the
%%%    node the component is connected to forwards them to that node's bridge process, which holds
%%%    the refs and carries the commands out in order.
%%%  * the component's connection is the process behind its route (cluster-wide table); every
%%%    node's bridge monitors that pid: it is connected exactly while that process lives, which
%%%    cannot race with a quick reconnect (a new connection is a new pid), and a bridge on a node
%%%    started later learns of it on its own. With several connections for one component JID,
%%%    every node pairs with the same one (the lowest pid) and sends its events to it directly.
%%%  * a node that dies takes its sessions with it without any unbind hook: the survivors see
%%%    nodedown and tell the component (<node-down node='…'/>).
%%%
%%% Options: component (default "mdm." ++ host), ack_timeout (seconds, default 10),
%%% batch_size (events per stanza to the component, default 100).
-module(mod_mdm_bridge).
-behaviour(gen_mod).

-export([start/2, stop/1, reload/3, depends/2, mod_opt_type/1, mod_options/1, mod_doc/0]).
-export([sm_receive_packet/1, user_send_packet/1, sm_register_connection_hook/3,
         sm_remove_connection_hook/3, c2s_authenticated_packet/2,
         c2s_filter_send/1, c2s_handle_info/2, local_send_to_resource/1,
         c2s_session_pending/1, c2s_session_resumed/1, c2s_copy_session/2,
         component_connected/1, component_disconnected/2, iq_carbons/1, filter_packet/1,
         store_mam_message/7, pubsub_publish_item/6]).
%% for the bridge's own modules: its process (mod_mdm_bridge_link) and plans (mod_mdm_bridge_plans)
-export([proc/1, alive/1, presence_events/3, with_hint/2, init_tables/2, session_pid/2, sync_events/2, add_hooks/1, del_hooks/1,
         misc_tab/1, sessions_tab/1, order_tab/1, component_of/2, mode/1, leave/2, user_of/1, el/2,
         forwarded/1, next_ref/1, now_ms/0, sid_pid/1, switch_mode/2, push_event/3, push_registered/2,
         start_archivers/1, stop_archivers/1, mds_publish/3, archive/3]).

-include("logger.hrl").
-include("xmpp.hrl").
-include("ejabberd_router.hrl").

-define(NS_BRIDGE, <<"urn:x-open-mdm:bridge:0">>).
-define(NS_NOTIFY, <<"urn:x-open-mdm:notify:0">>).
-define(NS_MDS, <<"urn:xmpp:mds:displayed:0">>).   % XEP-0490 (R4.3)
-define(NS_SID, <<"urn:xmpp:sid:0">>).
-define(NS_JMI, <<"urn:xmpp:jingle-message:0">>).
-define(TICK, 1000).
-define(MAX_DEPTH, 1000).            % the component reads 2048 levels; hand over no deeper than this
-define(MAX_EVENT, 508 * 1024).      % one event, well under the component's 1 MiB stanza limit
-define(MAX_BATCH, 256 * 1024).      % bytes of events in one <events/> stanza
-define(ESCAPED, 6).                 % the most bytes one character takes escaped (&quot; &apos;)
-define(FLIP_WAIT, 1000).            % ms to wait for the sessions to switch carbons mode
-define(ARCHIVERS, 8).               % archive writers per node and host (issue 15)

%% One row per bound session of this host, keyed by its lowercased {bare, resource}: written by
%% the session's own c2s process (bind, carbons, CSI, presence), read by every hook.
-record(s, {key :: {binary(), binary()},
            jid :: binary(),
            pid :: pid(),
            sid :: binary(),                              % the session's pid, encoded
            carbons = false :: boolean(),
            csi = undefined :: undefined | active | inactive,
            prio = undefined :: undefined | integer(),   % undefined: no available presence
            caps = undefined :: undefined | binary(),    % XEP-0115 node: the client software (R8.3)
            hibernated = false :: boolean(),             % XEP-0198 pending: a phantom session (R7.1)
            active_at = undefined :: undefined | integer()}).


%%%===================================================================
%%% gen_mod
%%%===================================================================
start(Host, Opts) ->
    [?ERROR_MSG("~ts is not loaded on ~ts: mod_mdm_bridge needs it to give users stock behaviour "
                "while the MDM component is not serving (R9.10); add \"~ts: {}\" to modules", [M, Host, M])
     || M <- [mod_carboncopy, mod_client_state], not gen_mod:is_loaded(Host, M)],
    check_listener(Host, Opts),
    gen_mod:start_child(mod_mdm_bridge_link, Host, Opts).

%% Issue 12: without an ejabberd_service listener for the component's JID the component can never
%% connect and users get stock delivery: say so at start. (On a cluster the listener may be on
%% other nodes only; then the line is expected on this one.)
check_listener(Host, Opts) ->
    Comp = component_of(Host, Opts),
    Serves = fun({_, ejabberd_service, LOpts}) ->
                     Get = if is_map(LOpts) -> fun(K) -> maps:get(K, LOpts, []) end;
                              true -> fun(K) -> proplists:get_value(K, LOpts, []) end
                           end,
                     case Get(hosts) of
                         [] -> true;  % no hosts: any JID with the listener's global password
                         Hosts -> lists:keymember(Comp, 1, Hosts)
                     end;
                (_) -> false
             end,
    case catch lists:any(Serves, ejabberd_option:listen()) of
        true -> ok;
        false -> ?ERROR_MSG("No ejabberd_service listener for ~ts on this node: the MDM component cannot "
                            "connect and users get stock delivery; add one (\"mdm-component setup ejabberd\" "
                            "writes it), or set mod_mdm_bridge's component option to the component's JID",
                            [Comp]);
        _ -> ok
    end.

stop(Host) ->
    gen_mod:stop_child(mod_mdm_bridge_link, Host).

reload(Host, NewOpts, _OldOpts) ->
    gen_server:cast(proc(Host), {reload, NewOpts}).

%% Started after them, so the carbons iq handler registered last, ours, is the one that runs.
depends(_Host, _Opts) ->
    [{mod_carboncopy, hard}, {mod_client_state, hard}].

mod_opt_type(component) -> econf:binary();
mod_opt_type(ack_timeout) -> econf:pos_int();
mod_opt_type(batch_size) -> econf:pos_int().

mod_options(_Host) ->
    [{component, undefined}, {ack_timeout, 10}, {batch_size, 100}].

mod_doc() ->
    #{desc => [<<"Relays sessions and messages to the MDM component (docs/bridge-protocol.md).">>]}.

%%%===================================================================
%%% Names and shared tables
%%%===================================================================
proc(Host) -> gen_mod:get_module_proc(Host, mod_mdm_bridge_link).  % the bridge's process
sessions_tab(Host) -> gen_mod:get_module_proc(Host, mdm_bridge_sessions).
misc_tab(Host) -> gen_mod:get_module_proc(Host, mdm_bridge_misc).
order_tab(Host) -> gen_mod:get_module_proc(Host, mdm_bridge_order).

%% Made by the bridge process (their owner) before it adds the hooks: they end with it.
init_tables(Host, Tag) ->
    ets:new(sessions_tab(Host), [ordered_set, named_table, public, {keypos, #s.key},
                                 {read_concurrency, true}, {write_concurrency, true}]),
    ets:new(misc_tab(Host), [set, named_table, public, {read_concurrency, true}]),
    ets:new(order_tab(Host), [set, named_table, public, {write_concurrency, true}]),
    mod_mdm_bridge_plans:init(Host),
    ets:insert(misc_tab(Host), [{connected, false}, {last_ref, 0}, {tag, Tag}]).

%% The pid of this node's session Key, if it is still there.
session_pid(Host, Key) ->
    case ets:lookup(sessions_tab(Host), Key) of
        [#s{pid = Pid}] -> Pid;
        [] -> undefined
    end.

%% What a (re)connected component must know of this node's sessions (<sync/> follows).
sync_events(Host, Now) ->
    lists:flatmap(fun(S) -> session_events(S, Now) end, ets:tab2list(sessions_tab(Host))).

component_of(Host, Opts) ->
    case gen_mod:get_opt(component, Opts) of
        undefined -> <<"mdm.", Host/binary>>;
        C -> C
    end.

%% The component's connection state as the bridge process last saw it: messages are handed over
%% only while it is true.
connected(Host) ->
    try ets:lookup_element(misc_tab(Host), connected, 2)
    catch error:badarg -> false
    end.

%% Messages go to the component: it is connected and MDM is on (R1.3: with MDM off in its config
%% it is told about sessions still, but ejabberd's own modules serve, as without it).
serving(Host) ->
    connected(Host) andalso mode(Host) == mdm.

%% stock: mod_carboncopy copies (the component is not serving, R9.10); mdm: the component does.
%% Set by the bridge process before it asks the sessions to switch, read by the carbons iq in the
%% session's own process: a session that enables carbons meanwhile ends up right either way.
mode(Host) ->
    try ets:lookup_element(misc_tab(Host), mode, 2)
    catch error:badarg -> stock
    end.

%% mod_carboncopy's flag for this session (run in the session's own process: ejabberd_sm accepts
%% nothing else).
stock_carbons(#jid{luser = U, lserver = S, lresource = R}, true) ->
    ejabberd_sm:set_user_info(U, S, R, carboncopy, ?NS_CARBONS_2);
stock_carbons(#jid{luser = U, lserver = S, lresource = R}, false) ->
    ejabberd_sm:del_user_info(U, S, R, carboncopy).

%% Limits (docs/operations.md): what the component cannot take is not handed over. The size is
%% the XML that goes on the link (escaped: a body of N '&' is 5N bytes there), not the term's.
fits(Pkt) ->
    El = xmpp:encode(Pkt),
    %% most messages are small: the upper bound (as for batches) spares serialising them here
    depth_within(El, ?MAX_DEPTH) andalso
        (erlang:external_size(El) * ?ESCAPED =< ?MAX_EVENT orelse wire_size(El) =< ?MAX_EVENT).

%% fits/1 for a stanza that would be handed over; when it does not, the bridge process logs it
%% (once a minute, with a count) and the caller takes the native path.
fits_or_note(Host, Pkt) ->
    fits(Pkt) orelse begin
        gen_server:cast(proc(Host), {over_limit, jid:encode(xmpp:get_from(Pkt)), jid:encode(xmpp:get_to(Pkt))}),
        false
    end.

wire_size(El) ->
    byte_size(fxml:element_to_binary(El)).

depth_within(_, 0) -> false;
depth_within(#xmlel{children = Children}, N) ->
    lists:all(fun(#xmlel{} = C) -> depth_within(C, N - 1); (_) -> true end, Children);
depth_within(_, _) -> true.

now_ms() -> erlang:monotonic_time(millisecond).

%% A ref is this node's id, a dot and a counter: unique in the cluster (R9.8). The bridge process
%% keys its held stanzas by the counter alone.
next_ref(Host) ->
    N = ets:update_counter(misc_tab(Host), last_ref, 1),
    {N, <<(ets:lookup_element(misc_tab(Host), tag, 2))/binary, $., (integer_to_binary(N))/binary>>}.

%% A session id is its c2s pid, so any node can deliver to it (fanout).
sid(Pid) -> base64:encode(term_to_binary(Pid)).

sid_pid(Sid) ->
    try binary_to_term(base64:decode(Sid), [safe]) of
        Pid when is_pid(Pid) -> Pid;
        _ -> undefined
    catch _:_ -> undefined
    end.

key({U, S, R}) -> {<<U/binary, "@", S/binary>>, R}.

update(Host, Key, Changes) ->
    ets:update_element(sessions_tab(Host), Key, Changes).

%% Only users with an MDM client (carbons on) or a session in the background can be served
%% differently by the component; everyone else's messages take the native path at once, exactly
%% as without the bridge (R1.3, R9.7). The flag is in ejabberd_sm's session info, so a message
%% routed on one node sees the user's sessions on every node (R9.8).
component_can_matter(U, S) ->
    lists:any(fun({_R, Info}) -> proplists:get_value(mdm, Info, false) == true end,
              ejabberd_sm:get_user_info(U, S)).

%% Written by the session's own process (ejabberd_sm accepts nothing else) after carbons or CSI
%% changed.
set_matters(#jid{luser = U, lserver = S, lresource = R} = JID) ->
    case ets:lookup(sessions_tab(S), key(jid:tolower(JID))) of
        [#s{carbons = C, csi = Csi, hibernated = H}] ->
            ejabberd_sm:set_user_info(U, S, R, mdm, C orelse Csi == inactive orelse H);  % R5.7
        [] -> ok
    end.

%% Hand an event to the bridge process, which batches it for the component.
%% Every event about a user drops the user's delivery plans, on every node (issue 15/23).
event(Host, El) ->
    drop_plan(Host, fxml:get_tag_attr_s(<<"jid">>, El)),
    gen_server:cast(proc(Host), {event, El}).

drop_plan(Host, <<_, _/binary>> = J) ->
    case binary:split(J, <<"@">>) of
        [U, _] -> mod_mdm_bridge_plans:drop(Host, jid:nodeprep(U));
        _ -> ok
    end;
drop_plan(_Host, _) ->
    ok.

forwarded(Pkt) ->
    #xmlel{name = <<"forwarded">>, attrs = [{<<"xmlns">>, ?NS_FORWARD}],
           children = [xmpp:encode(Pkt)]}.

el(Name, Attrs) -> #xmlel{name = Name, attrs = Attrs}.

%%%===================================================================
%%% Hooks: sessions, carbons, CSI, presence (each runs in the session's own c2s process)
%%%===================================================================
sm_register_connection_hook({_, Pid}, #jid{lserver = Host} = JID, _Info) ->
    Sid = sid(Pid),
    Key = key(jid:tolower(JID)),
    Full = jid:encode(JID),
    ets:insert(sessions_tab(Host), #s{key = Key, jid = Full, pid = Pid, sid = Sid}),
    event(Host, el(<<"bind">>, [{<<"jid">>, Full}, {<<"sid">>, Sid}])),
    represence(Host, JID).

sm_remove_connection_hook({_, Pid}, #jid{lserver = Host} = JID, _Info) ->
    Key = key(jid:tolower(JID)),
    Tab = sessions_tab(Host),
    case ets:lookup(Tab, Key) of
        [#s{pid = Pid}] ->
            ets:delete(Tab, Key),
            event(Host, el(<<"unbind">>, [{<<"jid">>, jid:encode(JID)}]));
        _ -> ok  % replaced by a newer session of the same resource: its own bind came first
    end.

iq_carbons(#iq{type = set, from = From, sub_els = [El]} = IQ)
  when is_record(El, carbons_enable); is_record(El, carbons_disable) ->
    Enable = is_record(El, carbons_enable),
    Host = From#jid.lserver,
    update(Host, key(jid:tolower(From)), {#s.carbons, Enable}),
    set_matters(From),
    %% R9.10: mod_carboncopy serves this session too while the component does not
    stock_carbons(From, Enable andalso mode(Host) == stock),
    event(Host, el(<<"carbons">>, [{<<"jid">>, jid:encode(From)},
                                   {<<"enabled">>, atom_to_binary(Enable, latin1)}])),
    xmpp:make_iq_result(IQ);
iq_carbons(#iq{type = set, lang = Lang} = IQ) ->
    xmpp:make_error(IQ, xmpp:err_bad_request(<<"Only <enable/> or <disable/> tags are allowed">>, Lang));
iq_carbons(#iq{lang = Lang} = IQ) ->
    xmpp:make_error(IQ, xmpp:err_not_allowed(<<"Value 'get' of 'type' attribute is not allowed">>, Lang)).

%% XEP-0352: the state is kept in the c2s state (for the hold filter) and in the session row (for
%% a reconnecting component). mod_client_state sees the nonza too (R9.10: it holds while we don't).
c2s_authenticated_packet(#{jid := JID, lserver := Host} = State, #csi{type = T}) ->
    update(Host, key(jid:tolower(JID)), {#s.csi, T}),
    set_matters(JID),
    event(Host, el(<<"csi">>, [{<<"jid">>, jid:encode(JID)}, {<<"state">>, atom_to_binary(T, latin1)}])),
    State#{mdm_csi => T};
c2s_authenticated_packet(State, _) ->
    State.

%% Issue 23, as the Prosody bridge (issue 15): what a user sends matters to the component only if
%% the user has another session (R2.3 copies, R3.1 the active client), a push registration (R3.6
%% even with one session), or it is a read marker (R4.3) or a Jingle Message Initiation (R9.4).
%% Anything else is not handed over at all (no event through the bridge process per IM sent);
%% the next bind of the user reports the others' activity again (represence/2, R3.1).
copy_matters(#jid{luser = U, lserver = S}, #message{sub_els = Els}) ->
    lists:any(fun(El) -> case xmpp:get_ns(El) of
                             ?NS_CHAT_MARKERS_0 -> true;
                             ?NS_JMI -> true;
                             _ -> false
                         end
              end, Els)
        orelse length(ejabberd_sm:get_user_resources(U, S)) > 1
        orelse push_registered(S, U).

%% R3.1: a session bound: the component learns again how long ago each of the user's other
%% sessions was last active (what they sent alone was not reported), on every node (R9.8).
represence(Host, #jid{luser = U} = JID) ->
    Bare = <<U/binary, "@", Host/binary>>,
    Others = [S || #s{jid = J} = S <- ets:select(sessions_tab(Host), [{#s{key = {Bare, '_'}, _ = '_'}, [], ['$_']}]),
                   J /= jid:encode(JID)],
    [event(Host, E) || E <- presence_events(Others, now_ms())],
    [gen_server:cast({proc(Host), N}, {represence, Bare}) || N <- nodes()],
    ok.

%% The presence (with idle) of this node's sessions of Bare, for another node's bind.
presence_events(Host, Bare, Now) ->
    presence_events(ets:select(sessions_tab(Host), [{#s{key = {Bare, '_'}, _ = '_'}, [], ['$_']}]), Now).

presence_events(Sessions, Now) ->
    [E || S <- Sessions, #xmlel{name = <<"presence">>} = E <- session_events(S, Now)].

%% What a session sends: broadcast presence and messages. Sending an IM or available presence
%% is what makes a client active (R3.1); the time is kept for a reconnecting component.
user_send_packet({#message{} = Pkt, #{jid := JID, lserver := Host}} = Acc) ->
    case xmpp:get_text(Pkt#message.body) of
        <<>> -> ok;
        _ -> update(Host, key(jid:tolower(JID)), {#s.active_at, now_ms()})
    end,
    %% Over the limits (R9.6), no event: one the component cannot read would take the held
    %% messages of its whole <events/> batch with it (they would wait for the ack timeout). Such
    %% a message gets no sent copies while the component serves (docs/operations.md, "Limits").
    case serving(Host) andalso copy_matters(JID, Pkt) andalso fits(Pkt) of  % noted where it is received
        true ->
            %% R4.3: a marker for an IM delivered on a plan: the component learns its archive id first
            [event(Host, E) || E <- mod_mdm_bridge_plans:planned_marker(Host, JID#jid.luser, Pkt)],
            event(Host, #xmlel{name = <<"message-out">>, attrs = [{<<"jid">>, jid:encode(JID)}],
                               children = [forwarded(Pkt)]});
        false -> ok
    end,
    Acc;
user_send_packet({#presence{to = #jid{luser = U, lserver = S, lresource = <<>>}, type = T} = Pkt,
                  #{jid := #jid{luser = U, lserver = S} = JID}} = Acc)
  when T == available; T == unavailable ->
    Prio = case Pkt#presence.priority of undefined -> 0; P -> P end,
    Caps = case xmpp:get_subtag(Pkt, #caps{}) of
               #caps{node = Node} when Node /= <<>> -> Node;
               _ -> undefined
           end,
    Key = key(jid:tolower(JID)),
    case T of
        available -> update(S, Key, [{#s.prio, Prio}, {#s.active_at, now_ms()}, {#s.caps, Caps}]);
        unavailable -> update(S, Key, {#s.prio, undefined})
    end,
    case connected(S) of
        true ->
            event(S, el(<<"presence">>, [{<<"jid">>, jid:encode(JID)},
                                         {<<"available">>, atom_to_binary(T == available, latin1)},
                                         {<<"priority">>, integer_to_binary(Prio)}]
                        ++ [{<<"caps">>, Caps} || Caps /= undefined]));
        false -> ok
    end,
    Acc;
%% XEP-0357 enable/disable: remembered until the server answers it (c2s_filter_send below), when
%% mod_push has stored the change.
user_send_packet({#iq{type = set, id = Id, sub_els = [El]} = Pkt, State} = Acc) ->
    case xmpp:get_ns(El) of
        ?NS_PUSH_0 -> {Pkt, State#{mdm_push_iq => Id}};
        _ -> Acc
    end;
user_send_packet(Acc) ->
    Acc.

%% Whether the user has a push registration (mod_push's own storage): with no live device, a
%% phantom session (R7.1).
push_registered(Host, User) ->
    case gen_mod:is_loaded(Host, mod_push) of
        true ->
            Mod = gen_mod:db_mod(Host, mod_push),
            case Mod:lookup_sessions(User, Host) of
                {ok, [_ | _]} -> true;
                _ -> false
            end;
        false -> false
    end.

push_event(Host, User, Registered) ->
    el(<<"push">>, [{<<"jid">>, <<User/binary, "@", Host/binary>>},
                    {<<"registered">>, atom_to_binary(Registered, latin1)}]).

%% XEP-0198 (mod_stream_mgmt): a device that went away without logging out keeps its session for
%% a while, a phantom session (R7.1), counted apart by the component's capacity monitor.
c2s_session_pending(#{jid := JID, lserver := Host} = State) ->
    hibernated(Host, JID, true),
    State.

%% A resumed session carries on in a new process, registered as a new session: it keeps its
%% carbons choice (copied below) and its CSI state (in the c2s state).
c2s_session_resumed(#{jid := JID, lserver := Host} = State) ->
    case maps:take(mdm_carbons, State) of
        {true, State1} ->
            update(Host, key(jid:tolower(JID)), [{#s.carbons, true} | [{#s.csi, C} || #{mdm_csi := C} <- [State]]]),
            set_matters(JID),
            stock_carbons(JID, mode(Host) == stock),
            event(Host, el(<<"carbons">>, [{<<"jid">>, jid:encode(JID)}, {<<"enabled">>, <<"true">>}])),
            hibernated(Host, JID, false),
            State1;
        _ ->
            hibernated(Host, JID, false),
            maps:remove(mdm_carbons, State)
    end.

c2s_copy_session(State, #{jid := JID, lserver := Host} = Old) ->
    Carbons = case ets:lookup(sessions_tab(Host), key(jid:tolower(JID))) of
                  [#s{carbons = C}] -> C;
                  [] -> false
              end,
    State1 = State#{mdm_carbons => Carbons},
    case Old of
        #{mdm_csi := Csi} -> State1#{mdm_csi => Csi};
        _ -> State1
    end;
c2s_copy_session(State, _) ->
    State.

hibernated(Host, JID, Hibernated) ->
    update(Host, key(jid:tolower(JID)), {#s.hibernated, Hibernated}),
    set_matters(JID),  % R5.7: a hibernated session's messages go to the component
    event(Host, el(<<"hibernated">>, [{<<"jid">>, jid:encode(JID)},
                                      {<<"state">>, atom_to_binary(Hibernated, latin1)}])).

%%%===================================================================
%%% Hooks: taking stanzas over
%%%===================================================================
%% Every chat or normal message for a local user with an MDM client or a background session goes
%% to the component, which answers with deliver/fanout/route/ack for its ref. Groupchat, headline
%% and error messages are never copied (docs/bridge-protocol.md): they take the native path at
%% once, and reach a background session through the hold filter below like any other stanza.
sm_receive_packet(#message{to = #jid{luser = U, lserver = Host} = To, from = From, type = Type,
                           meta = Meta} = Pkt)
  when U /= <<>>, Type /= groupchat, Type /= headline, Type /= error ->
    Pass = maps:is_key(mdm_native, Meta)       % given back by the component or by fail-open
        orelse maps:is_key(from_offline, Meta) % offline storage replaying to a new session
        %% sent by the server on the account's behalf (archive results, PEP): never copied, and
        %% a round trip would reorder them against the iq result they belong to
        orelse (From#jid.luser == U andalso From#jid.lserver == Host andalso From#jid.lresource == <<>>),
    %% Issue 23: a plannable IM on the user's delivery plan needs no round trip. Checked first:
    %% a plan implies an MDM client (its carbons event would have dropped it) and is never handed
    %% over (no limits to check).
    Plan = not Pass andalso serving(Host) andalso mod_mdm_bridge_plans:targets(Host, U, Pkt),
    Hand = not Pass
        andalso (Plan /= false
                 orelse (serving(Host)
                         andalso component_can_matter(U, Host)
                         andalso fits_or_note(Host, Pkt)))  % over the limits: native path, stock carbons
        andalso privacy_allows(Host, To, Pkt),
    if Hand, Plan /= false ->
            case waiting(Host, U) of
                false ->
                    %% delivered from the sender's own process, as ejabberd_sm delivers (R2.1, R3.2)
                    case mod_mdm_bridge_plans:deliver(Host, U, Pkt, Plan) of
                        true -> ok;
                        false -> hand_over(Host, U, To, Pkt)  % none of its sessions left
                    end;
                true ->
                    %% R2.4: never ahead of one still waiting; on the plan in its turn
                    enter(Host, U),
                    behind(Host, U, {planned, U, Pkt})
            end,
            {stop, drop};
       Hand ->
            hand_over(Host, U, To, Pkt),
            {stop, drop};
       %% R2.4/R9.6: the native path, but an earlier message of this user is still in the bridge
       %% (at the component, or waiting for its archive write): it goes behind that one, through
       %% the same way, and is delivered natively right after it (a component that just died
       %% left its IMs to fail-open, which must not be overtaken)
       not Pass ->
            case waiting(Host, U) of
                true ->
                    enter(Host, U),
                    behind(Host, U, {native, U, Pkt}),
                    {stop, drop};
                false -> Pkt
            end;
       true -> Pkt
    end;
sm_receive_packet(Acc) ->
    Acc.

hand_over(Host, U, To, Pkt) ->
    enter(Host, U),
    case gen_mod:is_loaded(Host, mod_mam) of
        true -> archive_then_hold(Host, U, To, Pkt);
        false -> hold_in(Host, Pkt)
    end.

%% R2.4/R9.6 order: how many of a user's messages entered the bridge on this node and are not
%% delivered yet (O(1) for the hook; each node orders the messages routed there, R9.8). The
%% sender's process counts one up before the message goes on; the bridge process counts it down
%% after it delivered it, so a message that finds the count at 0 cannot overtake one.
enter(Host, U) ->
    ets:update_counter(order_tab(Host), U, 1, {U, 0}).

leave(Host, U) ->
    try ets:update_counter(order_tab(Host), U, -1) of
        0 -> ets:select_delete(order_tab(Host), [{{U, 0}, [], [true]}]);
        _ -> ok
    catch error:badarg -> ok
    end.

waiting(Host, U) ->
    try ets:lookup(order_tab(Host), U) of
        [{_, N}] -> N > 0;
        [] -> false
    catch error:badarg -> false
    end.

%% The same way a handed-over message of the user takes (its archive writer, then the bridge
%% process), so it arrives there behind every earlier one.
behind(Host, U, Msg) ->
    case archiver_of(Host, U) of
        undefined -> gen_server:cast(proc(Host), Msg);
        Name -> Name ! {behind, Host, Msg}
    end.

hold_in(Host, Pkt) ->
    {Ref, Wire} = next_ref(Host),
    %% the user's plan generation as the message goes out: its answer is a plan only if no event
    %% about the user follows it (issue 23)
    Gen = mod_mdm_bridge_plans:gen(Host, user_of(Pkt)),
    gen_server:cast(proc(Host), {hold, Ref, {in, xmpp:put_meta(Pkt, mdm_gen, Gen), now_ms()},
                                 #xmlel{name = <<"message-in">>, attrs = [{<<"ref">>, Wire}],
                                        children = [forwarded(Pkt)]}}).

%% Issue 15: the archive write (a synchronous SQL insert with mod_mam on SQL) runs in the user's
%% archive writer, not in the sender's process, as stock ejabberd runs it in the recipient's
%% session. Without the writers (the module is stopping) it runs here, as before.
archive_then_hold(Host, U, To, Pkt) ->
    case archiver_of(Host, U) of
        undefined -> hold_in(Host, archive(Host, To, Pkt));
        Name -> Name ! {archive, Host, To, Pkt}
    end.

archiver_of(Host, U) ->
    try persistent_term:get({?MODULE, archivers, Host}) of
        Names -> element(1 + erlang:phash2(U, tuple_size(Names)), Names)
    catch error:_ -> undefined
    end.

start_archivers(Host) ->
    Names = list_to_tuple([gen_mod:get_module_proc(Host, list_to_atom("mod_mdm_archiver_" ++ integer_to_list(I)))
                           || I <- lists:seq(1, ?ARCHIVERS)]),
    [begin
         case whereis(Name) of
             undefined -> ok;
             Old ->  % from before a module restart: let it finish what it holds
                 MRef = monitor(process, Old),
                 Old ! stop,
                 receive {'DOWN', MRef, _, _, _} -> ok
                 after 5000 -> exit(Old, kill), receive {'DOWN', MRef, _, _, _} -> ok end
                 end
         end,
         register(Name, spawn(fun archiver/0))
     end || Name <- tuple_to_list(Names)],
    persistent_term:put({?MODULE, archivers, Host}, Names).

%% What was queued before the stop is archived and handed over first (or delivered natively, when
%% the component is gone meanwhile: the bridge process's {hold, …} does that).
stop_archivers(Host) ->
    try persistent_term:get({?MODULE, archivers, Host}) of
        Names ->
            persistent_term:erase({?MODULE, archivers, Host}),
            [catch (Name ! stop) || Name <- tuple_to_list(Names)]
    catch error:badarg -> ok
    end.

archiver() ->
    receive
        {archive, Host, To, Pkt} ->
            Pkt1 = try archive(Host, To, Pkt)
                   catch Class:Reason ->
                           %% delivered all the same (unarchived), as a failed write in stock mod_mam
                           ?ERROR_MSG("MDM: archiving a message for ~ts failed: ~p:~p",
                                      [jid:encode(To), Class, Reason]),
                           Pkt
                   end,
            hold_in(Host, Pkt1),
            archiver();
        {behind, Host, Msg} ->  % archived on delivery (natively or on the plan), as stock
            gen_server:cast(proc(Host), Msg),
            archiver();
        stop -> ok
    end.

%% The user's default privacy list (XEP-0016 / XEP-0191 blocking), as ejabberd_sm checks it
%% before offline storage.
privacy_allows(Host, To, Pkt) ->
    allow == ejabberd_hooks:run_fold(privacy_check_packet, Host, allow, [To, Pkt, in]).

%% mod_mam archives on delivery to a session; the component delivers to sessions one by one,
%% so the message is archived once, here, and every copy carries its stanza id.
archive(Host, To, Pkt) ->
    case gen_mod:is_loaded(Host, mod_mam) of
        true ->
            {Pkt1, _} = mod_mam:user_receive_packet({Pkt, #{jid => jid:remove_resource(To)}}),
            Pkt1;
        false -> Pkt
    end.

%% While a session is in the background, every stanza ejabberd sends it goes to the component as
%% session-out, unless the component itself (or fail-open) asked for the delivery (R5).
c2s_filter_send({#iq{type = T, id = Id} = Pkt, #{mdm_push_iq := Id, jid := JID, lserver := Host} = State})
  when T == result; T == error ->
    User = JID#jid.luser,
    event(Host, push_event(Host, User, push_registered(Host, User))),
    c2s_filter_send({Pkt, maps:remove(mdm_push_iq, State)});
c2s_filter_send({Pkt, #{mdm_csi := inactive, jid := JID, lserver := Host} = State} = Acc)
  when ?is_stanza(Pkt) ->
    hold_out(Pkt, JID, Host, State, Acc);
%% R5.7: a hibernated session (XEP-0198 pending) is held the same way, so neither
%% mod_stream_mgmt's queue nor mod_push (both in c2s_handle_send, after this filter) sees what the
%% component holds for it; the component lets everything through when nobody else is active.
c2s_filter_send({Pkt, #{mgmt_state := pending, jid := JID, lserver := Host} = State} = Acc)
  when ?is_stanza(Pkt) ->
    hold_out(Pkt, JID, Host, State, Acc);
c2s_filter_send(Acc) ->
    Acc.

hold_out(Pkt, JID, Host, State, Acc) ->
    %% not serving: mod_client_state / mod_stream_mgmt, after us, act as they would without us (R9.10)
    case xmpp:get_meta(Pkt, mdm_bypass, false) orelse not serving(Host) orelse not fits_or_note(Host, Pkt) of
        true -> Acc;
        false ->
            {Ref, Wire} = next_ref(Host),
            Full = jid:encode(JID),
            mod_mdm_bridge_plans:drop(Host, JID#jid.luser),  % held for the background: no plan
            gen_server:cast(proc(Host), {hold, Ref, {out, self(), key(jid:tolower(JID)), Pkt, now_ms()},
                                         #xmlel{name = <<"session-out">>,
                                                attrs = [{<<"ref">>, Wire},
                                                         {<<"jid">>, Full}],
                                                children = [forwarded(Pkt)]}}),
            {stop, {drop, State}}
    end.

%% R3.6: ejabberd 23.01's mod_push offers no veto. It pushes for every archived message to the
%% devices that keep a registration but are not online (store_mam_message, priority 50). While the
%% user has an active client (as the component last said, <active/>), this handler runs first,
%% archives the message itself with mod_mam (what mod_mam's own handler at 100 does) and ends the
%% hook: the message is archived once, and no push alerts the user's other devices. Calls (Jingle
%% Message Initiation with RTP) ring as stock; with no active client everything is stock.
store_mam_message(#message{} = Pkt, U, S, Peer, Nick, chat, recv) ->
    case user_active(S, <<U/binary, "@", S/binary>>) andalso not is_call(Pkt) of
        true -> {stop, mod_mam:store_mam_message(Pkt, U, S, Peer, Nick, chat, recv)};
        false -> Pkt
    end;
store_mam_message(Pkt, _U, _S, _Peer, _Nick, _Type, _Dir) ->
    Pkt.

user_active(Host, Bare) ->
    try ets:lookup(misc_tab(Host), {active, Bare}) of
        [{_, Until}] -> erlang:system_time(millisecond) < Until;
        [] -> false
    catch error:badarg -> false
    end.

is_call(Pkt) ->
    case fxml:get_subtag_with_xmlns(xmpp:encode(Pkt), <<"propose">>, ?NS_JMI) of
        false -> false;
        Propose -> fxml:get_subtag_with_xmlns(Propose, <<"description">>, <<"urn:xmpp:jingle:apps:rtp:1">>) /= false
    end.

%% R4.3: XEP-0490 Message Displayed Synchronization in the user's PEP (mod_pubsub). The component
%% turns a <displayed/> marker into a publish (mds_publish, below); a client's own publish is
%% reported to it, so clients that only do markers get a <displayed/>. Our own publishes are not.
pubsub_publish_item(ServerHost, ?NS_MDS, Publisher, #jid{luser = U, lserver = S}, ItemId, Payload)
  when U /= <<>> ->
    case get(mdm_mds_publishing) /= true andalso connected(ServerHost) of
        true ->
            Ids = [Id || #xmlel{name = <<"displayed">>} = D <- Payload,
                         #xmlel{name = <<"stanza-id">>} = Sid <- D#xmlel.children,
                         Id <- [fxml:get_tag_attr_s(<<"id">>, Sid)], Id /= <<>>],
            Who = case Publisher of
                      #jid{lresource = R} when R /= <<>> -> [{<<"publisher">>, jid:encode(Publisher)}];
                      _ -> []
                  end,
            [event(ServerHost, E) || Id <- lists:sublist(Ids, 1),
                                     E <- mod_mdm_bridge_plans:planned_published(ServerHost, U, Id)],  % R4.3
            [event(ServerHost, el(<<"mds">>, [{<<"jid">>, <<U/binary, "@", S/binary>>}, {<<"peer">>, ItemId},
                                              {<<"stanza-id">>, Id} | Who])) || Id <- lists:sublist(Ids, 1)],
            ok;
        false -> ok
    end;
pubsub_publish_item(_ServerHost, _Node, _Publisher, _Service, _ItemId, _Payload) ->
    ok.

mds_publish(User, Peer, StanzaId) ->
    case catch jid:decode(User) of
        #jid{luser = U, lserver = S} when U /= <<>>, Peer /= <<>>, StanzaId /= <<>> ->
            Item = #xmlel{name = <<"displayed">>, attrs = [{<<"xmlns">>, ?NS_MDS}],
                          children = [#xmlel{name = <<"stanza-id">>,
                                             attrs = [{<<"xmlns">>, ?NS_SID}, {<<"id">>, StanzaId},
                                                      {<<"by">>, User}]}]},
            %% XEP-0490's node configuration: only the owner reads it, items are kept
            Opts = [{access_model, whitelist}, {persist_items, true}],
            Publish = fun(O) -> mod_pubsub:publish_item({U, S, <<>>}, S, ?NS_MDS, jid:make(U, S), Peer,
                                                        [Item], O, all) end,
            put(mdm_mds_publishing, true),
            Result = try case Publish(Opts) of
                             {error, _} -> Publish([]);  % created by a client with another config
                             R -> R
                         end
                     catch C:E -> {error, {C, E}}
                     end,
            erase(mdm_mds_publishing),
            case Result of
                {result, _} -> ok;
                Err -> ?WARNING_MSG("MDM: MDS publish for ~ts (~ts) failed: ~p", [User, Peer, Err])
            end;
        _ -> ok
    end.

%% A delivery the bridge process asks this session's c2s process to make, as is.
c2s_handle_info(State, {mdm_deliver, Pkt}) ->
    {stop, ejabberd_c2s:send(State, xmpp:put_meta(Pkt, mdm_bypass, true))};
%% Issue 23: an IM delivered on a plan, archived here by mod_mam as on stock delivery (R9.3: once,
%% by the first session; the others' copies, sm_copy, only get its stanza id), then the hint.
c2s_handle_info(State, {mdm_deliver_mam, Pkt, Hint}) ->
    {Pkt1, State1} = try mod_mam:user_receive_packet({Pkt, State})
                     catch Class:Reason ->
                             ?ERROR_MSG("MDM: archiving a planned message failed: ~p:~p", [Class, Reason]),
                             {Pkt, State}
                     end,
    {stop, ejabberd_c2s:send(State1, xmpp:put_meta(with_hint(xmpp:del_meta(Pkt1, sm_copy), Hint),
                                                   mdm_bypass, true))};
%% The bridge switches this session's stock carbons (R9.10), then waits for the answer.
c2s_handle_info(#{jid := JID} = State, {mdm_stock_carbons, Stock, From, Ref}) ->
    stock_carbons(JID, Stock),
    From ! {mdm_switched, Ref},
    {stop, State};
c2s_handle_info(State, _) ->
    State.

%% Commands from the component, accepted only from the configured component JID.
local_send_to_resource(#message{from = From, to = #jid{lserver = Host, luser = <<>>, lresource = <<>>},
                                sub_els = Els}) ->
    case [E || #xmlel{name = <<"commands">>} = E <- Els, fxml:get_tag_attr_s(<<"xmlns">>, E) == ?NS_BRIDGE] of
        [] -> ok;
        [Commands | _] ->
            gen_server:cast(proc(Host), {commands, From, Commands}),
            stop
    end;
local_send_to_resource(_) ->
    ok.

%% A stanza for the component that it could not read is refused here, with an error to its sender,
%% so no client can drop the component's link (R9.6, docs/operations.md). The router runs this for
%% every stanza: anything not addressed to one of our components passes after one lookup.
filter_packet(Pkt) ->
    case xmpp:get_to(Pkt) of
        #jid{luser = <<>>, lserver = D} ->
            case lists:member(D, persistent_term:get({?MODULE, components}, [])) andalso not fits(Pkt) of
                true ->
                    ejabberd_router:route_error(Pkt, xmpp:err_policy_violation(
                                                       <<"Too large or too deeply nested">>, xmpp:get_lang(Pkt))),
                    drop;
                false -> Pkt
            end;
        _ -> Pkt
    end.

%% These hooks run only on the node the component connects to: they wake every node's bridge,
%% which then looks at the route table itself (and each also looks on its tick).
component_connected(_Domain) ->
    notify_bridges().

component_disconnected(_Domain, _Reason) ->
    notify_bridges().

notify_bridges() ->
    lists:foreach(
      fun(Host) -> [gen_server:cast({proc(Host), N}, check_route) || N <- [node() | nodes()]] end,
      ejabberd_option:hosts()).

add_hooks(Host) ->
    ejabberd_hooks:add(sm_receive_packet, Host, ?MODULE, sm_receive_packet, 100),
    ejabberd_hooks:add(user_send_packet, Host, ?MODULE, user_send_packet, 89),
    ejabberd_hooks:add(sm_register_connection_hook, Host, ?MODULE, sm_register_connection_hook, 50),
    ejabberd_hooks:add(sm_remove_connection_hook, Host, ?MODULE, sm_remove_connection_hook, 50),
    ejabberd_hooks:add(c2s_authenticated_packet, Host, ?MODULE, c2s_authenticated_packet, 50),
    %% before mod_client_state's filters (50, and they sort before ours by name)
    ejabberd_hooks:add(c2s_filter_send, Host, ?MODULE, c2s_filter_send, 49),
    ejabberd_hooks:add(store_mam_message, Host, ?MODULE, store_mam_message, 49),  % before mod_push (R3.6)
    ejabberd_hooks:add(pubsub_publish_item, Host, ?MODULE, pubsub_publish_item, 50),
    ejabberd_hooks:add(c2s_handle_info, Host, ?MODULE, c2s_handle_info, 50),
    ejabberd_hooks:add(local_send_to_resource_hook, Host, ?MODULE, local_send_to_resource, 50),
    ejabberd_hooks:add(c2s_session_pending, Host, ?MODULE, c2s_session_pending, 50),
    ejabberd_hooks:add(c2s_session_resumed, Host, ?MODULE, c2s_session_resumed, 50),
    ejabberd_hooks:add(c2s_copy_session, Host, ?MODULE, c2s_copy_session, 50),
    ejabberd_hooks:add(component_connected, ?MODULE, component_connected, 50),
    ejabberd_hooks:add(filter_packet, ?MODULE, filter_packet, 50),
    ejabberd_hooks:add(component_disconnected, ?MODULE, component_disconnected, 50),
    mod_mdm_bridge_bind2:add_hooks(Host),  % R9.11: Bind2 inline choices (ejabberd 24.02+)
    gen_iq_handler:add_iq_handler(ejabberd_sm, Host, ?NS_CARBONS_2, ?MODULE, iq_carbons).

del_hooks(Host) ->
    mod_mdm_bridge_bind2:del_hooks(Host),
    gen_iq_handler:remove_iq_handler(ejabberd_sm, Host, ?NS_CARBONS_2),
    case gen_mod:is_loaded(Host, mod_carboncopy) of  % give the carbons iq back to it
        true -> gen_iq_handler:add_iq_handler(ejabberd_sm, Host, ?NS_CARBONS_2, mod_carboncopy, iq_handler);
        false -> ok
    end,
    ejabberd_hooks:delete(sm_receive_packet, Host, ?MODULE, sm_receive_packet, 100),
    ejabberd_hooks:delete(user_send_packet, Host, ?MODULE, user_send_packet, 89),
    ejabberd_hooks:delete(sm_register_connection_hook, Host, ?MODULE, sm_register_connection_hook, 50),
    ejabberd_hooks:delete(sm_remove_connection_hook, Host, ?MODULE, sm_remove_connection_hook, 50),
    ejabberd_hooks:delete(c2s_authenticated_packet, Host, ?MODULE, c2s_authenticated_packet, 50),
    ejabberd_hooks:delete(c2s_filter_send, Host, ?MODULE, c2s_filter_send, 49),
    ejabberd_hooks:delete(store_mam_message, Host, ?MODULE, store_mam_message, 49),
    ejabberd_hooks:delete(pubsub_publish_item, Host, ?MODULE, pubsub_publish_item, 50),
    ejabberd_hooks:delete(c2s_handle_info, Host, ?MODULE, c2s_handle_info, 50),
    ejabberd_hooks:delete(local_send_to_resource_hook, Host, ?MODULE, local_send_to_resource, 50),
    ejabberd_hooks:delete(c2s_session_pending, Host, ?MODULE, c2s_session_pending, 50),
    ejabberd_hooks:delete(c2s_session_resumed, Host, ?MODULE, c2s_session_resumed, 50),
    ejabberd_hooks:delete(c2s_copy_session, Host, ?MODULE, c2s_copy_session, 50),
    case [H || H <- ejabberd_option:hosts(), H /= Host, gen_mod:is_loaded(H, ?MODULE)] of
        [] ->
            ejabberd_hooks:delete(component_connected, ?MODULE, component_connected, 50),
            ejabberd_hooks:delete(filter_packet, ?MODULE, filter_packet, 50),
            ejabberd_hooks:delete(component_disconnected, ?MODULE, component_disconnected, 50);
        _ -> ok
    end.

%% R9.10: every local session that enabled carbons gets mod_carboncopy's flag (stock) or loses it
%% (mdm); each session's own process writes it, and we wait (bounded) until they all did.
switch_mode(Host, Mode) ->
    ets:insert(misc_tab(Host), {mode, Mode}),
    Ref = make_ref(),
    Pids = [Pid || #s{pid = Pid, carbons = true} <- ets:tab2list(sessions_tab(Host))],
    [Pid ! {mdm_stock_carbons, Mode == stock, self(), Ref} || Pid <- Pids],
    Deadline = erlang:monotonic_time(millisecond) + ?FLIP_WAIT,
    Missing = await_switched(Ref, length(Pids), Deadline),
    Missing > 0 andalso ?WARNING_MSG("~p session(s) on ~ts did not switch to ~p carbons within ~pms",
                                     [Missing, Host, Mode, ?FLIP_WAIT]),
    ok.

await_switched(_Ref, 0, _Deadline) -> 0;
await_switched(Ref, N, Deadline) ->
    receive {mdm_switched, Ref} -> await_switched(Ref, N - 1, Deadline)
    after max(0, Deadline - erlang:monotonic_time(millisecond)) -> N
    end.

alive(P) when node(P) == node() -> is_process_alive(P);
alive(P) -> lists:member(node(P), nodes()).

session_events(#s{jid = J, sid = Sid, carbons = C, csi = Csi, prio = Prio, active_at = At, caps = Caps,
                  hibernated = H}, Now) ->
    [el(<<"bind">>, [{<<"jid">>, J}, {<<"sid">>, Sid}])]
        ++ [el(<<"carbons">>, [{<<"jid">>, J}, {<<"enabled">>, <<"true">>}]) || C]
        ++ [el(<<"csi">>, [{<<"jid">>, J}, {<<"state">>, atom_to_binary(Csi, latin1)}]) || Csi /= undefined]
        %% idle: seconds since the session last sent available presence or an IM (R3.1)
        ++ [el(<<"presence">>, [{<<"jid">>, J}, {<<"available">>, <<"true">>},
                                {<<"priority">>, integer_to_binary(Prio)}]
               ++ [{<<"idle">>, float_to_binary((Now - At) / 1000, [{decimals, 3}])} || At /= undefined]
               ++ [{<<"caps">>, Caps} || Caps /= undefined])
            || Prio /= undefined]
        ++ [el(<<"hibernated">>, [{<<"jid">>, J}, {<<"state">>, <<"true">>}]) || H].

user_of(Pkt) -> (xmpp:get_to(Pkt))#jid.luser.

%% The notification hint (R3.4) goes on the delivered message itself.
with_hint(Pkt, V) when V == <<>>; V == undefined ->
    Pkt;
with_hint(#message{sub_els = Els} = Pkt, V) ->
    Pkt#message{sub_els = Els ++ [#xmlel{name = <<"notify">>, attrs = [{<<"xmlns">>, ?NS_NOTIFY}, {<<"value">>, V}]}]};
with_hint(Pkt, _V) ->
    Pkt.
