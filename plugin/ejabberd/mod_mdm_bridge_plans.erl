%%% mod_mdm_bridge_plans: delivery plans on ejabberd (issue 15, 23; docs/bridge-protocol.md,
%%% "Delivery plans").
%%%
%%% The component marks the answer to a plannable IM as the user's plan (<fanout plan=… user=…/>);
%%% the bridge then delivers the user's next plannable IMs on it without a round trip, in the
%%% sender's own process (sm_receive_packet), not through the bridge process: the policy is the
%%% component's, the bridge executes its table.
%%%
%%% Where the state lives, the way ejabberd keeps its own (mod_carboncopy): per node, in ETS.
%%%  * a plan is taken only on the node whose bridge held the message it answers, and used only
%%%    for IMs routed on that node (their sender's node); other nodes ask the component and get
%%%    their own plan. A plan names sessions by pid, reachable from any node (R9.8).
%%%  * every event about a user that goes to the component drops the user's plans on every node
%%%    (a generation per user, bumped here and cast to the other nodes' bridges), and an answer is
%%%    taken as a plan only if the user's generation did not move since its message was handed
%%%    over. A node that goes down, a component that drops, a mode switch or new rules drop every
%%%    plan on the node: no plan outlives a session that moved (its bind is an event) or a dead
%%%    node (R9.8).
%%%  * order (R2.4): the sender's process delivers on the plan only when none of the user's
%%%    messages waits in the bridge (mod_mdm_bridge's per-user count); otherwise the IM goes behind
%%%    them and the bridge process delivers it on the plan (or hands it over) in its turn.
%%%  * R4.3: the archive ids of the last ?PLANNED_MAX planned IMs are kept per node and reported
%%%    (<planned/>) only right before a marker or an MDS publish that names one.
%%%  * R9.3: with mod_mam, a planned IM is archived once, in one recipient session's own process
%%%    (as stock ejabberd archives a message routed to several sessions: the others get it as a
%%%    copy, sm_copy, with the same stanza id and no write).
-module(mod_mdm_bridge_plans).

-export([init/1, rules/2, drop/2, drop_local/2, drop_all/1, gen/2, take/6, targets/3, deliver/4,
         planned_marker/3, planned_published/3, take_planned/2]).

-include("xmpp.hrl").

-define(PLANNED_MAX, 10000).  % R4.3: planned IMs whose archive ids are kept per node

tab(Host) -> gen_mod:get_module_proc(Host, mdm_bridge_plans).
planned_tab(Host) -> gen_mod:get_module_proc(Host, mdm_bridge_planned).

%% Created by the bridge process (their owner): they end with it.
init(Host) ->
    ets:new(tab(Host), [set, named_table, public, {read_concurrency, true}, {write_concurrency, true}]),
    ets:new(planned_tab(Host), [set, named_table, public, {write_concurrency, true}]),
    ets:insert(planned_tab(Host), {next, 0}),
    ok.

%% <plan-rules neutral='…'/>: the child namespaces that keep an IM plannable; plans made under
%% other rules are dropped. undefined: no plans (the component has not answered our sync).
rules(Host, Neutral) ->
    drop_all(Host),
    case Neutral of
        undefined -> ets:delete(tab(Host), rules);
        _ -> ets:insert(tab(Host), {rules, maps:from_list([{NS, true} || NS <- Neutral])})
    end.

%% Every event about the user drops the user's plans, on every node of the cluster.
drop(Host, U) ->
    drop_local(Host, U),
    [gen_server:cast({mod_mdm_bridge:proc(Host), N}, {drop_plan, U}) || N <- nodes()],
    ok.

drop_local(Host, U) ->
    try
        ets:update_counter(tab(Host), {gen, U}, 1, {{gen, U}, 0}),
        ets:delete(tab(Host), {plan, U})
    catch error:badarg -> ok
    end.

drop_all(Host) ->
    try ets:match_delete(tab(Host), {{plan, '_'}, '_', '_'})
    catch error:badarg -> ok
    end.

%% The user's generation when a message is handed over: its answer becomes a plan only if no
%% event about the user went out since.
gen(Host, U) ->
    try ets:lookup(tab(Host), {gen, U}) of
        [{_, G}] -> G;
        [] -> 0
    catch error:badarg -> 0
    end.

%% A fanout with plan='s|inf' for user U, whose message was handed over at generation Gen.
%% Lists: [{Pids, Hint}]. Run in the bridge process.
take(Host, U, Gen, Lists, Plan, Now) ->
    Seconds = case Plan of
                  <<"inf">> -> infinity;
                  _ -> try binary_to_float(Plan) catch error:badarg -> undefined end
              end,
    case Seconds /= undefined andalso ets:member(tab(Host), rules) andalso gen(Host, U) == Gen of
        true ->
            Until = case Seconds of infinity -> infinity; _ -> Now + round(Seconds * 1000) end,
            ets:insert(tab(Host), {{plan, U}, Until, [{P, H} || {Ps, H} <- Lists, P <- Ps]});
        false -> ok
    end.

%% The sessions (and hints) a plannable IM to the user's bare JID goes to, or false: ask the
%% component.
targets(Host, U, #message{type = chat, to = #jid{lresource = <<>>}, body = Body, sub_els = Els}) ->
    try ets:lookup(tab(Host), {plan, U}) of
        [{_, Until, Targets}] ->
            Now = erlang:monotonic_time(millisecond),
            case (Until == infinity orelse Now < Until) andalso xmpp:get_text(Body) /= <<>> of
                true ->
                    [{rules, Neutral}] = ets:lookup(tab(Host), rules),
                    lists:all(fun(El) -> maps:is_key(xmpp:get_ns(El), Neutral) end, Els) andalso Targets;
                false -> false
            end;
        [] -> false
    catch error:_ -> false
    end;
targets(_Host, _U, _Pkt) ->
    false.

%% Deliver on the plan; false when none of its sessions is left (the caller asks the component).
deliver(Host, U, Pkt, Targets) ->
    Live = [T || {Pid, _} = T <- Targets, mod_mdm_bridge:alive(Pid)],
    case Live of
        [] -> false;
        _ ->
            case gen_mod:is_loaded(Host, mod_mam) of
                true ->
                    %% R9.3: archived once, in the first session's process; the others get copies
                    [{First, H} | Copies] = Live,
                    First ! {mdm_deliver_mam, Pkt, H},
                    Copy = xmpp:put_meta(Pkt, sm_copy, true),
                    [Pid ! {mdm_deliver_mam, Copy, Hint} || {Pid, Hint} <- Copies],
                    remember(Host, U, Pkt);
                false ->
                    [Pid ! {mdm_deliver, mod_mdm_bridge:with_hint(Pkt, Hint)} || {Pid, Hint} <- Live]
            end,
            true
    end.

%% R4.3: (user, peer, message id) <-> the archive's id of a planned IM, the last ?PLANNED_MAX
%% per node, in a ring.
remember(Host, U, #message{id = Id, from = From} = Pkt) ->
    case xmpp:get_meta(Pkt, stanza_id, undefined) of
        Sid when is_integer(Sid), Id /= <<>> ->
            T = planned_tab(Host),
            Key = {U, jid:encode(jid:remove_resource(jid:tolower(From))), Id},
            SidB = integer_to_binary(Sid),
            Slot = ets:update_counter(T, next, {2, 1, ?PLANNED_MAX, 1}),
            case ets:lookup(T, {slot, Slot}) of
                [{_, OldKey, OldSid}] -> ets:delete(T, {id, OldKey}), ets:delete(T, {sid, U, OldSid});
                [] -> ok
            end,
            ets:insert(T, [{{slot, Slot}, Key, SidB}, {{id, Key}, SidB}, {{sid, U, SidB}, Key}]);
        _ -> ok
    end;
remember(_Host, _U, _Pkt) ->
    ok.

%% Before a <displayed/> marker the user sends: the <planned/> event for the IM it names.
planned_marker(Host, U, #message{to = #jid{} = To, sub_els = Els}) ->
    case [fxml:get_attr_s(<<"id">>, A) || #xmlel{name = <<"displayed">>, attrs = A} <- Els,
                                          fxml:get_attr_s(<<"xmlns">>, A) == ?NS_CHAT_MARKERS_0] of
        [Id | _] when Id /= <<>> ->
            Peer = jid:encode(jid:remove_resource(jid:tolower(To))),
            report(Host, {U, Peer, Id});
        _ -> []
    end;
planned_marker(_Host, _U, _Pkt) ->
    [].

%% Before an MDS publish by one of the user's clients that names archive id Sid.
planned_published(Host, U, Sid) ->
    case find(Host, {sid, U, Sid}) of
        {ok, Key} -> report(Host, Key);
        error -> []
    end.

report(Host, {U, Peer, Id} = Key) ->
    case find(Host, {id, Key}) of
        {ok, Sid} ->
            [#xmlel{name = <<"planned">>, attrs = [{<<"to">>, <<U/binary, "@", Host/binary>>},
                                                    {<<"from">>, Peer}, {<<"id">>, Id},
                                                    {<<"stanza-id">>, Sid}]}];
        error -> []
    end.

%% This node's table, then the others' (the IM may have been routed on another node, R9.8).
find(Host, K) ->
    case take_planned(Host, K) of
        {ok, _} = Found -> Found;
        error ->
            Answers = erpc:multicall(nodes(), ?MODULE, take_planned, [Host, K], 1000),
            case [V || {ok, {ok, V}} <- Answers] of
                [V | _] -> {ok, V};
                [] -> error
            end
    end.

take_planned(Host, K) ->
    try ets:lookup(planned_tab(Host), K) of
        [{_, V}] -> {ok, V};
        [] -> error
    catch error:badarg -> error
    end.
