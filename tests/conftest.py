"""Fixtures shared by the tests: a real PostgreSQL (tests/postgres.py), started and stopped by pid."""

from __future__ import annotations

import pytest_asyncio

from .postgres import Postgres


@pytest_asyncio.fixture
async def postgres():
    pg = Postgres()
    await pg.start()
    try:
        yield pg
    finally:
        pg.stop()
