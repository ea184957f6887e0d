%%% mod_mdm_bridge_link: the bridge's long-lived process, one per host and node: the component's
%%% link (docs/bridge-protocol.md), the way mod_push_keepalive is mod_push's process.
%%%
%%% It batches the events the hooks (mod_mdm_bridge) hand it into <events/> stanzas for the
%%% component, holds every message and stanza handed over under its ref until the component's one
%%% final answer, carries out the component's commands in order, and fails open: messages held when
%%% the component drops, or not answered within ack_timeout seconds, are delivered natively (R9.6).
%%%
%%% Order (R2.4, R9.6; issue 23): per user, what entered the bridge on this node leaves it in the
%%% order it entered. The hooks count a user's messages in flight (mod_mdm_bridge:enter/2); the
%%% process keeps, per user, a queue of refs held at the component and of messages that went behind
%%% them (for the native path, or for the user's delivery plan) and releases the latter only when
%%% every ref before them is done, so a message taking the native path after a component crash, or
%%% one on a plan, never overtakes one still at the component.
%%%
%%% Clusters (R9.8): the component's connection is the process behind its route (cluster-wide);
%%% every node's link process monitors it (a quick reconnect is a new pid), pairs with the lowest
%%% live one, reports this node's sessions (<sync/> covers this node only), and carries out the
%%% commands for this node's refs; commands for another node are forwarded to its link process.
-module(mod_mdm_bridge_link).
-behaviour(gen_server).

-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2, code_change/3]).

-include("logger.hrl").
-include("xmpp.hrl").
-include("ejabberd_router.hrl").

-define(NS_BRIDGE, <<"urn:x-open-mdm:bridge:0">>).
-define(TICK, 1000).
-define(MAX_BATCH, 256 * 1024).      % bytes of events in one <events/> stanza
-define(ESCAPED, 6).                 % the most bytes one character takes escaped (&quot; &apos;)
-define(MAX_EVENT, 508 * 1024).      % mod_mdm_bridge's limits (checked there), named in the log line
-define(MAX_DEPTH, 1000).

-record(state, {host :: binary(),
                component :: binary(),
                ack_timeout :: pos_integer(),
                batch_size :: pos_integer(),
                node :: binary(),                           % this node, on every <events/>
                tag :: binary(),                            % this node's id, the prefix of its refs
                comp_pid = undefined :: undefined | pid(),  % the component connection we pair with
                comp_mon = undefined :: undefined | reference(),
                %% ref -> {in, Packet, At} | {out, Pid, Key, Packet, At}
                pending = #{} :: #{integer() => tuple()},
                batch = [] :: [fxml:xmlel()],
                batch_len = 0 :: non_neg_integer(),
                batch_bytes = 0 :: non_neg_integer(),
                %% refs one of whose deliveries reached a session; the component may split a
                %% message's deliveries and its ack over several command stanzas
                reached = #{} :: #{integer() => true},
                %% R2.4/R9.6 order: per user, what entered the bridge and is not delivered yet, in
                %% the order it entered: refs held at the component, and messages to deliver
                %% natively or on the user's plan once every ref before them is done
                waiting = #{} :: #{binary() => queue:queue(integer() | {native | planned, message()})}}).

%% Input any client can repeat is logged at most once a minute per kind, with a count (R9.6: no log
%% flood). Runs in the bridge process: the count lives in its dictionary.
warn_limited(Kind, Format, Args) ->
    Now = erlang:monotonic_time(second),
    case get({warned, Kind}) of
        {Seen, Last} when Now - Last < 60 ->
            put({warned, Kind}, {Seen + 1, Last});
        Prev ->
            Seen = case Prev of {N, _} -> N; undefined -> 0 end,
            ?WARNING_MSG(Format, [Seen + 1 | Args]),
            put({warned, Kind}, {0, Now})
    end.

local_ref(Tag, Wire) ->
    case binary:split(Wire, <<".">>) of
        [Tag, N] -> try binary_to_integer(N) catch error:badarg -> undefined end;
        _ -> undefined  % not ours: treated like a ref already delivered natively
    end.

%%%===================================================================
%%% The bridge process: held refs, the event batch, the component's commands
%%%===================================================================
init([Host, Opts]) ->
    process_flag(trap_exit, true),
    Tag = ejabberd_cluster:node_id(),
    mod_mdm_bridge:init_tables(Host, Tag),
    mod_mdm_bridge:start_archivers(Host),
    mod_mdm_bridge:add_hooks(Host),
    ok = net_kernel:monitor_nodes(true),  % a dead node's sessions vanish without unbind (R9.8)
    State = configure(#state{host = Host, node = atom_to_binary(node(), utf8), tag = Tag}, Opts),
    ?INFO_MSG("MDM bridge started on ~ts (node ~ts) for component ~ts (ack timeout ~ps)",
              [Host, node(), State#state.component, State#state.ack_timeout]),
    erlang:send_after(?TICK, self(), tick),
    %% A module (re)started while the component is connected: start from a clean slate with it.
    {ok, check_route(State)}.

configure(State, Opts) ->
    Comp = mod_mdm_bridge:component_of(State#state.host, Opts),
    Known = persistent_term:get({mod_mdm_bridge, components}, []),
    lists:member(Comp, Known) orelse persistent_term:put({mod_mdm_bridge, components}, [Comp | Known]),
    State#state{component = Comp,
                ack_timeout = gen_mod:get_opt(ack_timeout, Opts),
                batch_size = gen_mod:get_opt(batch_size, Opts)}.

handle_call(_Request, _From, State) ->
    {reply, {error, badarg}, State}.

handle_cast({event, El}, #state{comp_pid = Pid} = State) when Pid /= undefined ->
    {noreply, queue_event(El, State)};
handle_cast({event, _}, State) ->
    {noreply, State};
handle_cast({hold, Ref, {in, Pkt, _} = P, El}, #state{comp_pid = Pid, pending = Pending, waiting = W} = State)
  when Pid /= undefined ->
    U = mod_mdm_bridge:user_of(Pkt),
    {noreply, queue_event(El, State#state{pending = Pending#{Ref => P},
                                          waiting = W#{U => queue:in(Ref, maps:get(U, W, queue:new()))}})};
handle_cast({hold, Ref, P, El}, #state{comp_pid = Pid, pending = Pending} = State) when Pid /= undefined ->
    {noreply, queue_event(El, State#state{pending = Pending#{Ref => P}})};
handle_cast({hold, _Ref, {in, Pkt, _}, _El}, State) ->
    %% The component dropped between the hook's check and now: natively, behind what waits (R9.6).
    {noreply, native(mod_mdm_bridge:user_of(Pkt), Pkt, State)};
handle_cast({hold, _Ref, P, _El}, State) ->
    deliver_natively(P, State),
    {noreply, State};
handle_cast({native, U, Pkt}, State) ->
    {noreply, native(U, Pkt, State)};
handle_cast({planned, U, Pkt}, State) ->
    {noreply, planned(U, Pkt, State)};
handle_cast({represence, Bare}, #state{host = Host, comp_pid = Pid} = State) when Pid /= undefined ->
    %% R3.1: a session of Bare bound on another node: our sessions' activity again (issue 23)
    {noreply, lists:foldl(fun queue_event/2, State, mod_mdm_bridge:presence_events(Host, Bare, mod_mdm_bridge:now_ms()))};
handle_cast({drop_plan, U}, #state{host = Host} = State) ->
    mod_mdm_bridge_plans:drop_local(Host, U),  % an event about the user on another node
    {noreply, State};
handle_cast({commands, From, El}, #state{component = Comp} = State) ->
    case jid:encode(From) of
        Comp -> {noreply, commands(El, State)};
        Other ->
            warn_limited(forged_commands,
                         "Ignored MDM bridge commands (~b in the last minute; latest from ~ts): only ~ts may send them",
                         [Other, Comp]),
            {noreply, State}
    end;
handle_cast({node_commands, El}, State) ->
    %% Forwarded by the bridge of the node the component is connected to (checked there).
    {noreply, run_commands(El#xmlel.children, State)};
handle_cast({active, User, Until}, #state{host = Host} = State) ->
    %% R3.6: every node archives, so every node keeps the component's word on who is active
    case Until > 0 of
        true -> ets:insert(mod_mdm_bridge:misc_tab(Host), {{active, User}, Until});
        false -> ets:delete(mod_mdm_bridge:misc_tab(Host), {active, User})
    end,
    {noreply, State};
handle_cast({mode, Mode}, #state{host = Host, comp_pid = Pid} = State) when Pid /= undefined ->
    case mod_mdm_bridge:mode(Host) of
        Mode -> ok;
        _ ->
            mod_mdm_bridge_plans:drop_all(Host),  % made under the other mode
            mod_mdm_bridge:switch_mode(Host, Mode),
            ?INFO_MSG("MDM ~ts on ~ts by the component's configuration",
                      [case Mode of stock -> "disabled: ejabberd's own carbons and CSI serve";
                                    mdm -> "enabled again" end, Host])
    end,
    {noreply, State};
handle_cast({over_limit, From, To}, State) ->
    warn_limited(over_limit, "MDM: ~b stanza(s) larger than ~b bytes or nested deeper than ~b levels in the last "
                 "minute took the native path (latest: ~ts -> ~ts)", [?MAX_EVENT, ?MAX_DEPTH, From, To]),
    {noreply, State};
handle_cast(check_route, State) ->
    {noreply, check_route(State)};
handle_cast({reload, Opts}, State) ->
    {noreply, configure(State, Opts)};
handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(flush, State) ->
    {noreply, flush_events(State)};
handle_info({'DOWN', Mon, process, _Pid, Reason}, #state{comp_mon = Mon, host = Host, component = Comp} = State) ->
    ets:insert(mod_mdm_bridge:misc_tab(Host), {connected, false}),
    mod_mdm_bridge_plans:rules(Host, undefined),  % plans end with the component's link
    ets:match_delete(mod_mdm_bridge:misc_tab(Host), {{active, '_'}, '_'}),  % R3.6: stock pushes while it is gone
    ?WARNING_MSG("MDM component ~ts disconnected (~p); stock delivery until it is back", [Comp, Reason]),
    %% R9.10: stock carbons first, so what was held is delivered natively with its stock copies
    mod_mdm_bridge:switch_mode(Host, stock),
    State1 = fail_open_all(State#state{comp_pid = undefined, comp_mon = undefined, batch = [], batch_len = 0,
                                       batch_bytes = 0}),
    {noreply, check_route(State1)};
handle_info({nodedown, Node}, #state{comp_pid = Pid, host = Host} = State) when Pid /= undefined ->
    mod_mdm_bridge_plans:drop_all(Host),  % R9.8: no plan outlives a node that went down
    ?WARNING_MSG("Cluster node ~ts is down: its sessions are gone; telling the MDM component", [Node]),
    {noreply, queue_event(mod_mdm_bridge:el(<<"node-down">>, [{<<"node">>, atom_to_binary(Node, utf8)}]), State)};
handle_info({nodedown, Node}, State) ->
    ?WARNING_MSG("Cluster node ~ts is down: its sessions are gone", [Node]),
    {noreply, State};
handle_info({nodeup, _Node}, State) ->
    {noreply, State};  % its own bridge reports its sessions when it sees the component
handle_info(tick, #state{pending = Pending, ack_timeout = Timeout, component = Comp} = State0) ->
    erlang:send_after(?TICK, self(), tick),
    State = check_route(State0),
    Limit = mod_mdm_bridge:now_ms() - Timeout * 1000,
    Late = [Ref || {Ref, P} <- lists:sort(maps:to_list(Pending)), held_at(P) < Limit],
    %% one line per tick, however many (issue 10.9: logs an admin can act on, not a flood)
    Late /= [] andalso ?WARNING_MSG("MDM component ~ts did not answer for ~p message(s) within ~ps; "
                                    "delivering them natively", [Comp, length(Late), Timeout]),
    %% oldest first, so a late message of a user is never behind one still waiting (R2.4)
    {noreply, lists:foldl(fun(Ref, S) ->
                                  deliver_natively(maps:get(Ref, Pending), S),
                                  forget(Ref, S)
                          end, State, Late)};
handle_info(_Info, State) ->
    {noreply, State}.

terminate(_Reason, #state{host = Host} = State) ->
    ets:insert(mod_mdm_bridge:misc_tab(Host), {connected, false}),
    mod_mdm_bridge_plans:rules(Host, undefined),
    mod_mdm_bridge:switch_mode(Host, stock),
    mod_mdm_bridge:del_hooks(Host),
    mod_mdm_bridge:stop_archivers(Host),
    fail_open_all(State),
    ok.

code_change(_OldVsn, State, _Extra) ->
    {ok, State}.

held_at({in, _, At}) -> At;
held_at({out, _, _, _, At}) -> At.

%% Events are batched: everything that reached the bridge process before the flush message goes
%% to the component in one <events/> stanza.
queue_event(El, #state{batch = [], batch_len = 0} = State) ->
    self() ! flush,
    queue_event1(El, State);
queue_event(El, State) ->
    queue_event1(El, State).

%% A batch ends at batch_size events or about ?MAX_BATCH bytes of XML as it goes on the link, so
%% no <events/> stanza outgrows what the component reads (docs/operations.md, R9.6). The size is
%% bounded from above without serialising here, in the one bridge process every message passes:
%% escaping makes a character at most ?ESCAPED bytes, and the term's size already counts more
%% than the markup. Each event itself was checked exactly where it was made (fits/1).
queue_event1(El, #state{batch = B, batch_len = N, batch_bytes = Bytes, batch_size = Max} = State) ->
    Size = erlang:external_size(El) * ?ESCAPED,
    State0 = case B /= [] andalso Bytes + Size > ?MAX_BATCH of
                 true -> flush_events(State);
                 false -> State
             end,
    State1 = State0#state{batch = [El | State0#state.batch], batch_len = State0#state.batch_len + 1,
                          batch_bytes = State0#state.batch_bytes + Size},
    case N + 1 >= Max of
        true -> flush_events(State1);
        false -> State1
    end.

flush_events(#state{batch = []} = State) ->
    State;
flush_events(#state{batch = B, host = Host, component = Comp, comp_pid = Pid, node = Node} = State)
  when Pid /= undefined ->
    Events = #xmlel{name = <<"events">>, attrs = [{<<"xmlns">>, ?NS_BRIDGE}, {<<"node">>, Node}],
                    children = lists:reverse(B)},
    %% Straight to the connection we pair with (the route table may hold another one).
    Pid ! {route, #message{from = jid:make(Host), to = jid:make(Comp), sub_els = [Events]}},
    State#state{batch = [], batch_len = 0, batch_bytes = 0};
flush_events(State) ->
    State#state{batch = [], batch_len = 0, batch_bytes = 0}.

%% The component's connection: the process behind its route, on any node. While we have none,
%% pair with the lowest live pid there is (every node picks the same one) and monitor it.
check_route(#state{comp_pid = undefined, component = Comp} = State) ->
    Backend = ejabberd_router:get_backend(),
    Routes = case Backend:find_routes(Comp) of
                 {ok, Rs} -> Rs;
                 _ -> []
             end,
    Live = [P || #route{pid = P} <- Routes, is_pid(P), mod_mdm_bridge:alive(P), authenticated_as(P, Comp)],
    case Live of
        [] -> State;
        _ -> on_connected(State, lists:min(Live))
    end;
check_route(State) ->
    State.

%% A component listener with several hosts registers all of them for any component that logs in
%% there (ejabberd's global_routes): the route to our component's JID may lead to another
%% component's connection. Pair only with a connection that authenticated as our component.
authenticated_as(P, Comp) ->
    try sys:get_state(P, 1000) of
        #{remote_server := Comp} -> true;
        #{remote_server := _} -> false;
        _ -> true  % not a component stream we know: keep the route table's word
    catch _:_ -> false  % gone, or not answering: not one to pair with now (the tick looks again)
    end.

%% Tell the (re)connected component everything it needs about this node's sessions: it starts
%% from a clean slate for this node.
on_connected(#state{host = Host, component = Comp} = State, Pid) ->
    Mon = erlang:monitor(process, Pid),
    mod_mdm_bridge_plans:rules(Host, undefined),  % no plans until its <plan-rules/> (issue 23)
    mod_mdm_bridge:switch_mode(Host, mdm),  % the component copies from now on, not mod_carboncopy (R9.10)
    ets:insert(mod_mdm_bridge:misc_tab(Host), {connected, true}),
    ets:match_delete(mod_mdm_bridge:misc_tab(Host), {{active, '_'}, '_'}),  % R3.6: the component tells again
    Now = mod_mdm_bridge:now_ms(),
    Events = mod_mdm_bridge:sync_events(Host, Now)
        ++ [mod_mdm_bridge:push_event(Host, U, true) || gen_mod:is_loaded(Host, mod_push),
                                         {U, _} <- ejabberd_auth:get_users(Host), mod_mdm_bridge:push_registered(Host, U)],
    State1 = lists:foldl(fun queue_event1/2,
                         State#state{comp_pid = Pid, comp_mon = Mon, batch = [], batch_len = 0, batch_bytes = 0},
                         %% every node of the cluster reports its own sessions (R9.8)
                         %% plans='1': this bridge delivers on delivery plans (issue 23)
                         [mod_mdm_bridge:el(<<"sync">>, [{<<"nodes">>, str:join([atom_to_binary(N, utf8)
                                                                   || N <- ejabberd_cluster:get_nodes()],
                                                                  <<" ">>)},
                                          {<<"plans">>, <<"1">>}])
                          | Events]),
    ?INFO_MSG("MDM component ~ts connected (~p); reported the sessions of ~ts on ~ts", [Comp, Pid, Host, node()]),
    flush_events(State1).

%% Held refs are delivered natively in the order they were handed over: each user's messages in
%% the order they entered the bridge (refs and the messages waiting behind them), then what was
%% held for background sessions (refs increase).
fail_open_all(#state{pending = Pending, waiting = W} = State) ->
    maps:foreach(fun(U, Q) -> fail_open_user(U, queue:to_list(Q), State) end, W),
    lists:foreach(fun({_Ref, P}) -> deliver_natively(P, State) end,
                  lists:sort([E || {_, {out, _, _, _, _}} = E <- maps:to_list(Pending)])),
    State#state{pending = #{}, reached = #{}, waiting = #{}}.

fail_open_user(U, Entries, #state{pending = Pending, host = Host} = State) ->
    lists:foreach(fun({native, Pkt}) -> deliver_natively({in, Pkt, 0}, State), mod_mdm_bridge:leave(Host, U);
                     ({planned, Pkt}) -> deliver_natively({in, Pkt, 0}, State), mod_mdm_bridge:leave(Host, U);
                     (Ref) ->
                          case maps:find(Ref, Pending) of
                              {ok, P} -> deliver_natively(P, State);
                              error -> ok
                          end,
                          mod_mdm_bridge:leave(Host, U)
                  end, Entries).

%% R2.4/R9.6: a message for the native path that went behind the user's earlier ones: delivered
%% now if none waits any more, else when the last one before it is done (release/2).
native(U, Pkt, #state{waiting = W, host = Host} = State) ->
    case maps:find(U, W) of
        {ok, Q} -> State#state{waiting = W#{U => queue:in({native, Pkt}, Q)}};
        error ->
            deliver_natively({in, Pkt, 0}, State),
            mod_mdm_bridge:leave(Host, U),
            State
    end.

%% Issue 23: an IM for the plan that had to wait behind the user's earlier messages, in its turn.
planned(U, Pkt, #state{waiting = W} = State) ->
    case maps:find(U, W) of
        {ok, Q} -> State#state{waiting = W#{U => queue:in({planned, Pkt}, Q)}};
        error ->
            case on_plan(U, Pkt, State) of
                true -> mod_mdm_bridge:leave(State#state.host, U), State;
                false -> hand_over_here(U, Pkt, queue:new(), State)
            end
    end.

on_plan(U, Pkt, #state{host = Host, comp_pid = Pid}) ->
    Pid /= undefined andalso
        case mod_mdm_bridge_plans:targets(Host, U, Pkt) of
            false -> false;
            Targets -> mod_mdm_bridge_plans:deliver(Host, U, Pkt, Targets)
        end.

%% A planned IM whose plan ended while it waited: handed over from here (archived first, as the
%% hook's way does), at the head of the user's queue; natively when the component is gone.
hand_over_here(U, Pkt, Rest, #state{comp_pid = undefined, host = Host, waiting = W} = State) ->
    deliver_natively({in, Pkt, 0}, State),
    mod_mdm_bridge:leave(Host, U),
    release(U, State#state{waiting = W#{U => Rest}});
hand_over_here(U, Pkt, Rest, #state{host = Host, pending = Pending, waiting = W} = State) ->
    Pkt1 = mod_mdm_bridge:archive(Host, xmpp:get_to(Pkt), Pkt),
    {Ref, Wire} = mod_mdm_bridge:next_ref(Host),
    Pkt2 = xmpp:put_meta(Pkt1, mdm_gen, mod_mdm_bridge_plans:gen(Host, U)),
    queue_event(#xmlel{name = <<"message-in">>, attrs = [{<<"ref">>, Wire}], children = [mod_mdm_bridge:forwarded(Pkt2)]},
                State#state{pending = Pending#{Ref => {in, Pkt2, mod_mdm_bridge:now_ms()}},
                            waiting = W#{U => queue:in_r(Ref, Rest)}}).

%% A ref of the user is done (delivered, routed, held, or failed open): what waited behind it and
%% is done too, or is for the native path, goes out now, in order, up to the next ref still at
%% the component.
release(U, #state{waiting = W, pending = Pending, host = Host} = State) ->
    case maps:find(U, W) of
        error -> State;
        {ok, Q} ->
            case queue:out(Q) of
                {empty, _} -> State#state{waiting = maps:remove(U, W)};
                {{value, {native, Pkt}}, Q1} ->
                    deliver_natively({in, Pkt, 0}, State),
                    mod_mdm_bridge:leave(Host, U),
                    release(U, State#state{waiting = W#{U => Q1}});
                {{value, {planned, Pkt}}, Q1} ->
                    case on_plan(U, Pkt, State) of
                        true ->
                            mod_mdm_bridge:leave(Host, U),
                            release(U, State#state{waiting = W#{U => Q1}});
                        false ->
                            %% the plan is gone: to the component, in its place (it stays counted)
                            hand_over_here(U, Pkt, Q1, State)
                    end;
                {{value, Ref}, Q1} when not is_map_key(Ref, Pending) ->
                    mod_mdm_bridge:leave(Host, U),
                    release(U, State#state{waiting = W#{U => Q1}});
                {{value, _}, _} -> State
            end
    end.

%% What would have happened without the bridge: ejabberd_sm routes the message (it is marked, so
%% this module lets it pass), or the stanza for a background session is sent to it.
deliver_natively({in, Pkt, _}, _State) ->
    ejabberd_sm:route(xmpp:put_meta(Pkt, mdm_native, true));
deliver_natively({out, Pid, Key, Pkt, _}, #state{host = Host}) ->
    case mod_mdm_bridge:session_pid(Host, Key) of
        Pid -> Pid ! {mdm_deliver, Pkt};
        _ -> ok  % gone, or a newer session of the same resource
    end.

%% Commands answer one node's events (node='…'): they are carried out there, where the refs are
%% held, so that node's deliveries keep their order (R9.8).
commands(El, #state{node = Node, host = Host} = State) ->
    case fxml:get_tag_attr_s(<<"node">>, El) of
        N when N == <<>>; N == Node -> run_commands(El#xmlel.children, State);
        N ->
            try binary_to_existing_atom(N, utf8) of
                Other -> gen_server:cast({mod_mdm_bridge:proc(Host), Other}, {node_commands, El})
            catch error:badarg ->
                    ?WARNING_MSG("MDM commands for unknown cluster node ~ts dropped", [N])
            end,
            State
    end.

%% Commands in one stanza are carried out in order and together (docs/bridge-protocol.md). A
%% message's deliveries and its ack may come in several stanzas (the component splits what is
%% too large): whether one of its deliveries reached a session is kept per ref until the ack.
run_commands([], State) ->
    State;
run_commands([#xmlel{name = Name, attrs = Attrs} = Cmd | Rest], #state{pending = Pending, tag = Tag} = State) ->
    Ref = case fxml:get_attr(<<"ref">>, Attrs) of
              {value, R} -> local_ref(Tag, R);
              false -> undefined
          end,
    P = maps:get(Ref, Pending, undefined),
    case Name of
        <<"deliver">> ->
            To = fxml:get_attr_s(<<"to">>, Attrs),
            Notify = fxml:get_attr_s(<<"notify">>, Attrs),
            %% A ref we no longer hold was already delivered natively: drop, never twice (R2.4).
            Done = (Ref == undefined orelse P /= undefined)
                andalso deliver(State, To, payload(Cmd, P), Notify),
            run_commands(Rest, case Done andalso Ref /= undefined of
                                   true -> State#state{reached = (State#state.reached)#{Ref => true}};
                                   false -> State
                               end);
        <<"fanout">> when P /= undefined ->
            Pkt = held_packet(P),
            Any = lists:foldl(
                    fun({Attr, Hint}, Acc) ->
                            Sids = binary:split(fxml:get_attr_s(Attr, Attrs), <<" ">>, [global, trim_all]),
                            lists:foldl(fun(Sid, A) -> deliver_sid(State, Sid, Pkt, Hint) or A end, Acc, Sids)
                    end, false, [{<<"notify">>, <<"true">>}, {<<"silent">>, <<"false">>}, {<<"plain">>, <<>>}]),
            Any andalso take_plan(Attrs, P, State),
            run_commands(Rest, finish(Ref, P, Any, false, State));
        <<"route">> when P /= undefined ->
            deliver_natively(P, State),
            run_commands(Rest, forget(Ref, State));
        <<"ack">> when P /= undefined ->
            Held = fxml:get_attr_s(<<"held">>, Attrs) == <<"true">>,
            run_commands(Rest, finish(Ref, P, false, Held, State));
        <<"active">> ->
            %% R3.6: who is active for this push user, for how many more seconds (none: stock pushes)
            Until = case {fxml:get_attr_s(<<"jid">>, Attrs), catch binary_to_integer(fxml:get_attr_s(<<"for">>, Attrs))} of
                        {J, For} when J /= <<>>, is_integer(For) -> erlang:system_time(millisecond) + For * 1000;
                        _ -> 0
                    end,
            User = fxml:get_attr_s(<<"user">>, Attrs),
            [gen_server:cast({mod_mdm_bridge:proc(State#state.host), N}, {active, User, Until}) || N <- [node() | nodes()]],
            run_commands(Rest, State);
        <<"mode">> ->
            %% R1.3: MDM switched off (stock: ejabberd's own carbons and CSI serve, as without the
            %% component) or on again in the component's config; every node of the cluster switches
            Mode = case fxml:get_attr_s(<<"value">>, Attrs) of
                       <<"stock">> -> stock;
                       _ -> mdm
                   end,
            [gen_server:cast({mod_mdm_bridge:proc(State#state.host), N}, {mode, Mode}) || N <- [node() | nodes()]],
            run_commands(Rest, State);
        <<"plan-rules">> ->
            %% issue 23: which IMs plans may carry; the plans this node holds are dropped
            mod_mdm_bridge_plans:rules(State#state.host,
                                       binary:split(fxml:get_attr_s(<<"neutral">>, Attrs), <<" ">>, [global, trim_all])),
            run_commands(Rest, State);
        <<"mds-publish">> ->
            %% R4.3: a <displayed/> marker, as XEP-0490 MDS in the user's PEP
            mod_mdm_bridge:mds_publish(fxml:get_attr_s(<<"user">>, Attrs), fxml:get_attr_s(<<"peer">>, Attrs),
                        fxml:get_attr_s(<<"stanza-id">>, Attrs)),
            run_commands(Rest, State);
        _ when Name == <<"fanout">>; Name == <<"route">>; Name == <<"ack">> ->
            run_commands(Rest, State);  % a ref already delivered natively
        _ ->
            ?WARNING_MSG("Unknown MDM bridge command <~ts/>", [Name]),
            run_commands(Rest, State)
    end;
run_commands([_ | Rest], State) ->
    run_commands(Rest, State).

%% Issue 23: a fanout the component marked as the user's plan, kept if no event about the user
%% went out since its message was handed over (the generation it carries).
take_plan(Attrs, {in, Pkt, _}, #state{host = Host}) ->
    case fxml:get_attr(<<"plan">>, Attrs) of
        {value, Plan} ->
            U = mod_mdm_bridge:user_of(Pkt),
            case fxml:get_attr_s(<<"user">>, Attrs) == <<U/binary, "@", Host/binary>> of
                true ->
                    Lists = [{[P || Sid <- binary:split(fxml:get_attr_s(A, Attrs), <<" ">>, [global, trim_all]),
                                    P <- [mod_mdm_bridge:sid_pid(Sid)], is_pid(P)], Hint}
                             || {A, Hint} <- [{<<"notify">>, <<"true">>}, {<<"silent">>, <<"false">>},
                                              {<<"plain">>, <<>>}]],
                    mod_mdm_bridge_plans:take(Host, U, xmpp:get_meta(Pkt, mdm_gen, -1), Lists, Plan, mod_mdm_bridge:now_ms());
                false -> ok
            end;
        false -> ok
    end;
take_plan(_Attrs, _P, _State) ->
    ok.

%% An ack whose deliveries all missed (the sessions left meanwhile) is a route: offline storage
%% keeps the message (R2.2). Held: the component keeps it in a buffer.
finish(Ref, {in, _, _} = P, false, false, #state{reached = Reached} = State) when not is_map_key(Ref, Reached) ->
    deliver_natively(P, State),
    forget(Ref, State);
finish(Ref, _P, _Reached, _Held, State) ->
    forget(Ref, State).

forget(Ref, #state{pending = Pending, reached = Reached} = State) ->
    State1 = State#state{pending = maps:remove(Ref, Pending), reached = maps:remove(Ref, Reached)},
    case maps:find(Ref, Pending) of
        {ok, {in, Pkt, _}} -> release(mod_mdm_bridge:user_of(Pkt), State1);
        _ -> State1
    end.

held_packet({in, Pkt, _}) -> Pkt;
held_packet({out, _, _, Pkt, _}) -> Pkt.

%% The stanza a deliver command carries, or else the held one.
payload(#xmlel{children = Children}, P) ->
    case [F || #xmlel{name = <<"forwarded">>} = F <- Children] of
        [#xmlel{children = Inner} | _] ->
            case [E || #xmlel{} = E <- Inner] of
                [E | _] ->
                    try xmpp:decode(E, ?NS_CLIENT, [ignore_els])
                    catch _:{xmpp_codec, Why} ->
                            ?WARNING_MSG("MDM deliver command with an unreadable stanza: ~ts",
                                         [xmpp:format_error(Why)]),
                            undefined
                    end;
                [] -> undefined
            end;
        [] when P /= undefined -> {held, held_packet(P)};
        [] -> undefined
    end.

deliver(_State, _To, undefined, _Notify) ->
    false;
deliver(State, To, {held, Pkt}, Notify) ->
    deliver_to(State, To, mod_mdm_bridge:with_hint(Pkt, Notify));
deliver(State, To, Pkt, _Notify) ->
    deliver_to(State, To, Pkt).

%% Deliveries go to the session's process, on whichever node it lives (R9.8).
deliver_to(#state{host = Host}, To, Pkt) ->
    case catch jid:decode(To) of
        #jid{lserver = Host, luser = U, lresource = R} when R /= <<>> ->
            case ejabberd_sm:get_session_pid(U, Host, R) of
                Pid when is_pid(Pid) -> Pid ! {mdm_deliver, Pkt}, true;
                _ -> false
            end;
        _ -> false
    end.

deliver_sid(_State, Sid, Pkt, Hint) ->
    case mod_mdm_bridge:sid_pid(Sid) of
        Pid when is_pid(Pid) ->
            case mod_mdm_bridge:alive(Pid) of
                true -> Pid ! {mdm_deliver, mod_mdm_bridge:with_hint(Pkt, Hint)}, true;
                false -> false
            end;
        undefined -> false
    end.
