"Shared pytest fixtures and helpers: the real corpus (skipped cleanly when absent), databases, synthetic voice."
import os, uuid
from pathlib import Path
import numpy as np
import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / 'shared' / 'corpus'


@pytest.fixture(scope='session')
def corpus() -> Path:
    "The folder of real recordings (`../shared/corpus`); skips the test when it is absent."
    if not (CORPUS / 'MANIFEST.md').exists(): pytest.skip('real corpus not present')
    return CORPUS


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    "Run each test in its own folder, so default files (calls.sqlite3, recordings/calls) stay out of the checkout."
    monkeypatch.chdir(tmp_path)


PG = os.environ.get('TEST_DATABASE_URL', 'postgresql://postgres@127.0.0.1:5432/test')
_pg_ok = None


def pg_reachable() -> bool:
    "Can we connect to the test PostgreSQL? (asked once)"
    global _pg_ok
    if _pg_ok is None:
        import psycopg
        try: psycopg.connect(PG, connect_timeout=3).close(); _pg_ok = True
        except Exception: _pg_ok = False
    return _pg_ok


@pytest.fixture(params=['sqlite', 'postgresql'])
def db_url(request, tmp_path):
    "A fresh database: a SQLite file, or a PostgreSQL schema of its own (dropped afterwards) so parallel runs never meet."
    if request.param == 'sqlite':
        yield f'sqlite:///{tmp_path}/calls.sqlite3'
        return
    if not pg_reachable(): pytest.skip(f'PostgreSQL not reachable at {PG}')
    import psycopg
    schema = f'test_{os.getpid()}_{uuid.uuid4().hex[:10]}'
    with psycopg.connect(PG, autocommit=True) as c: c.execute(f'CREATE SCHEMA {schema}')
    try: yield f'{PG}{"&" if "?" in PG else "?"}options=-csearch_path%3D{schema}'
    finally:
        with psycopg.connect(PG, autocommit=True) as c: c.execute(f'DROP SCHEMA {schema} CASCADE')


def voiced(seconds: float, seed: int = 0) -> np.ndarray:
    "A vowel-like voiced signal with a syllable rhythm (8 kHz int16): both detectors take it for speech."
    rng = np.random.default_rng(seed); n = int(seconds * 8000); t = np.arange(n) / 8000
    phase = 2 * np.pi * np.cumsum(130 + 20 * np.sin(2 * np.pi * 0.7 * t + seed)) / 8000
    x = sum(np.sin(k * phase + rng.uniform(0, 6.28)) / k for k in range(1, 20))
    return (4000 * x * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.int16)
