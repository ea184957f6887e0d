"""A throw-away PostgreSQL (Debian's package) for tests: initdb in a temp dir, started on a free
loopback port with trust authentication, stopped by pid. As root, it runs as the ``postgres``
user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from mdm_harness.ports import free_ports
from mdm_harness.waiting import poll_until


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql); scripts/install does it")
    return found[-1]


class Postgres:
    def __init__(self) -> None:
        # its own dir under /tmp: pytest's tmp_path is not reachable for the postgres user
        self.workdir = Path(tempfile.mkdtemp(prefix="mdm-pg-"))
        self.port = free_ports(1)[0]
        self.proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://mdm@127.0.0.1:{self.port}/mdm"

    def _as_owner(self) -> dict:
        if os.geteuid() != 0:
            return {}
        pw = pwd.getpwnam("postgres")
        return {"user": pw.pw_uid, "group": pw.pw_gid}

    async def start(self) -> None:
        data = self.workdir / "pgdata"
        owner = self._as_owner()
        if owner:
            shutil.chown(self.workdir, owner["user"], owner["group"])
        r = subprocess.run([_bin("initdb"), "-D", str(data), "-U", "mdm", "-A", "trust", "--no-sync"],
                           capture_output=True, text=True, **owner)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()}")
        with open(self.workdir / "postgres.log", "wb") as log:
            self.proc = subprocess.Popen(
                [_bin("postgres"), "-D", str(data), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={self.workdir}", "-c", "fsync=off"],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True, **owner)
        import asyncpg
        conns = []

        async def accepts() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited; see {self.workdir / 'postgres.log'}")
            try:
                conns.append(await asyncpg.connect(f"postgresql://mdm@127.0.0.1:{self.port}/postgres"))
            except (OSError, asyncpg.CannotConnectNowError):
                return False
            return True
        await poll_until(accepts, 30, f"PostgreSQL did not start; see {self.workdir / 'postgres.log'}", 0.05)
        conn = conns[0]
        await conn.execute("CREATE DATABASE mdm")
        await conn.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # "smart" shutdown by SIGTERM
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)


# Debian's ejabberd package ships ejabberd's (old) PostgreSQL schema here.
EJABBERD_PG_SCHEMA = "/usr/share/ejabberd/sql/pg.sql"


async def ejabberd_sql_archive(pg: Postgres, name: str) -> dict[str, object]:
    """A fresh database ``name`` with ejabberd's schema on the throw-away PostgreSQL: the ``sql``
    argument of the ejabberd harness backend (mod_mam on SQL)."""
    import asyncpg
    conn = await asyncpg.connect(f"postgresql://mdm@127.0.0.1:{pg.port}/mdm")
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(f"postgresql://mdm@127.0.0.1:{pg.port}/{name}")
    try:
        await conn.execute(Path(EJABBERD_PG_SCHEMA).read_text())
    finally:
        await conn.close()
    return {"server": "127.0.0.1", "port": pg.port, "database": name, "username": "mdm"}
