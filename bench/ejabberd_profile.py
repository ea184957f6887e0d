"""Where ejabberd's work goes during a paced run (issue 15): reductions per process.

A single ejabberd node started as a distributed node (its own epmd on a free port, a random
cookie), Bob sending N IMs at RATE to Alice's three devices, stock or with the bridge and the
component, archive off or on (mod_mam on PostgreSQL, as bench/latency.py). A hidden control node
snapshots every process's reductions before and after the window and prints the ten busiest
processes with their share, each named by its registered name or, for sessions, by
`sys:get_state` (ejabberd_c2s user/resource, ejabberd_service). Reductions approximate CPU per
Erlang process; the server's CPU per IM from /proc is printed too.
Run: .venv/bin/python bench/ejabberd_profile.py stock|mdm N RATE off|on
"""

import asyncio
import logging
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.postgres
import latency as L
from rawclient import RawClient

from mdm_harness.environment import DEFAULT_ACCOUNTS
from mdm_harness.faults import ComponentProcess
from mdm_harness.ports import free_ports
from mdm_harness.servers.base import stop_pid
from mdm_harness.servers.ejabberd import (
    DOMAIN,
    SECRET,
    EjabberdHandle,
    bridge_ebin,
    launch,
    render_config,
    wait_started,
)
from mdm_harness.servers.ejabberd_cluster import _start_epmd

logging.getLogger("asyncio").setLevel(logging.ERROR)

SNAP = (
    "Snap = fun() -> rpc:call(NODE, erlang, apply, [fun() -> maps:from_list([{P, {try "
    "case erlang:process_info(P, registered_name) of "
    "{registered_name, N} -> N; _ -> proc_lib:translate_initial_call(P) end catch _:_ -> dead end, "
    "case erlang:process_info(P, reductions) of {reductions, R} -> R; _ -> 0 end}} "
    "|| P <- erlang:processes()]) end, []]) end"
)


async def main(mdm: bool, n: int, rate: float, archive: bool):
    workdir = Path(tempfile.mkdtemp(prefix="mdm-ejprof-"))
    c2s, comp, http, epmd_port = free_ports(4)
    cookie = secrets.token_hex(8)
    node = f"ejp{secrets.token_hex(2)}@localhost"
    env = {"ERL_EPMD_PORT": str(epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1"}
    epmd = await _start_epmd(epmd_port, workdir)
    cfg = workdir / "ejabberd.yml"
    pg = None
    sql = None
    if archive:
        from tests.postgres import Postgres, ejabberd_sql_archive

        pg = Postgres()
        await pg.start()
        sql = await ejabberd_sql_archive(pg, "ejabberd")
    cfg.write_text(
        render_config(
            c2s, comp, http, bridge=mdm, without_modules=() if archive else ("mod_mam",), ack_timeout=10, sql=sql
        )
    )
    proc = await launch(
        cfg,
        workdir,
        bridge_ebin() if mdm else None,
        dist_args=["-sname", node, "-setcookie", cookie, "-kernel", "inet_dist_use_interface", "{127,0,0,1}"],
        extra_env=env,
    )
    h = EjabberdHandle(
        "ejabberd",
        DOMAIN,
        c2s,
        comp,
        "mdm." + DOMAIN,
        SECRET,
        "conference." + DOMAIN,
        workdir,
        proc.pid,
        workdir / "ejabberd.log",
        list(DEFAULT_ACCOUNTS),
        http_port=http,
    )
    component = None
    try:
        await wait_started(proc, workdir / "ejabberd.log")
        await h.register(DEFAULT_ACCOUNTS)
        if mdm:
            component = ComponentProcess.for_server(h, workdir, "mdm", str(workdir / "b.sqlite"), log_level="warning")
            await component.start()
            await L.wait_component(h)
        devs = [RawClient("alice", "alice-password", r) for r in L.DEVICES]
        bob = RawClient("bob", "bob-password", "desktop")
        for d in devs:
            await d.connect(c2s)
            d.messages = 0
            d.start_counting()
        await bob.connect(c2s, carbons=False)
        secs = n / rate
        expr = (
            SNAP.replace("NODE", f"'{node}'")
            + ", A = Snap(), timer:sleep("
            + str(int(secs * 1000))
            + "), B = Snap(), "
            "D = [{P, K, R1 - (case maps:find(P, A) of {ok, {_, X}} -> X; error -> 0 end)} "
            "|| {P, {K, R1}} <- maps:to_list(B)], "
            "T = lists:sum([V || {_, _, V} <- D]), Top = lists:sublist(lists:reverse(lists:keysort(3, D)), 10), "
            "Who = fun(P) -> case catch rpc:call('" + node + "', sys, get_state, [P, 2000]) of S when is_map(S) -> "
            "{maps:get(mod, S, undefined), maps:get(user, S, <<>>), maps:get(resource, S, <<>>)}; _ -> '' end end, "
            'io:format("total reductions ~p~n", [T]), '
            '[io:format("~5.1f% ~p ~p~n", [100 * V / T, K, Who(P)]) || {P, K, V} <- Top]'
        )
        erl = shutil.which("erl")
        ctl = await asyncio.create_subprocess_exec(
            erl,
            "-noinput",
            "-noshell",
            "-hidden",
            "-sname",
            f"ctl{secrets.token_hex(3)}@localhost",
            "-setcookie",
            cookie,
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
            "-eval",
            expr + ", halt().",
            env=dict(os.environ, **env, ERL_CRASH_DUMP="/dev/null"),
            cwd=str(workdir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        await asyncio.sleep(0.5)
        c0 = L.cpu_seconds(proc.pid)
        await L.paced(bob, 0, n, rate)
        out, _ = await ctl.communicate()
        print(("MDM" if mdm else "stock"), f"server CPU {(L.cpu_seconds(proc.pid) - c0) / n * 1e6:.0f} us/IM")
        print(out.decode())
        for c in (*devs, bob):
            await c.close()
    finally:
        if component:
            await component.stop()
        await stop_pid(proc.pid, "ejabberd")
        await stop_pid(epmd.pid, "epmd")
        if pg:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] == "mdm", int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "on"))
