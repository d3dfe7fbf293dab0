"Shared pytest fixtures and helpers: the real corpus (skipped cleanly when absent), databases, synthetic voice."
import asyncio, os, shutil, uuid
from pathlib import Path
import numpy as np
import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / 'shared' / 'corpus'


@pytest.fixture(scope='session')
def corpus() -> Path:
    "The folder of real recordings (`../shared/corpus`); skips the test when it is absent."
    if not (CORPUS / 'MANIFEST.md').exists(): pytest.skip('real corpus not present')
    return CORPUS


BROWSER = shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')


@pytest.fixture
def browser() -> str:
    "The headless browser the page tests drive; skips without one, or fails where one is required (REQUIRE_BROWSER, as on GitHub's CI)."
    if BROWSER: return BROWSER
    if os.environ.get('REQUIRE_BROWSER'): pytest.fail('a browser is required here (REQUIRE_BROWSER) and none was found')
    pytest.skip('no Chromium or Chrome here (Debian: apt-get install -y chromium)')


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


def _pg_schema():
    "A fresh PostgreSQL schema's URL, dropped afterwards (parallel runs never meet); skips without PostgreSQL, or fails where it is required."
    if not pg_reachable():
        if os.environ.get('REQUIRE_POSTGRES'): pytest.fail(f'PostgreSQL is required here (REQUIRE_POSTGRES) and not reachable at {PG}')
        pytest.skip(f'PostgreSQL not reachable at {PG}')
    import psycopg
    schema = f'test_{os.getpid()}_{uuid.uuid4().hex[:10]}'
    with psycopg.connect(PG, autocommit=True) as c: c.execute(f'CREATE SCHEMA {schema}')
    try: yield f'{PG}{"&" if "?" in PG else "?"}options=-csearch_path%3D{schema}'
    finally:
        with psycopg.connect(PG, autocommit=True) as c: c.execute(f'DROP SCHEMA {schema} CASCADE')


@pytest.fixture(params=['sqlite', 'postgresql'])
def db_url(request, tmp_path):
    "A fresh database: a SQLite file, or a PostgreSQL schema of its own."
    if request.param == 'sqlite': yield f'sqlite:///{tmp_path}/calls.sqlite3'
    else: yield from _pg_schema()


@pytest.fixture
def pg_url():
    "A fresh PostgreSQL schema of its own."
    yield from _pg_schema()


def wait_health(port: int, proc) -> dict:
    "GET /health of a server starting in `proc` until it answers (its output in the error if it never does)."
    import json, time, urllib.request
    deadline = time.monotonic() + 300  # only a hang fails: on a busy machine the engines take a while to load
    while True:
        try: return json.loads(urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2).read())
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline: raise AssertionError(proc.stdout.read1().decode())
            time.sleep(0.1)


class FrameClock:
    "A call's clock that moves 20 ms with each frame fed: its times are the audio's, however fast the test runs."
    def __init__(self): self.t = 0.
    def __call__(self): return self.t


def voiced(seconds: float, seed: int = 0) -> np.ndarray:
    "A vowel-like voiced signal with a syllable rhythm (8 kHz int16): both detectors take it for speech."
    rng = np.random.default_rng(seed); n = int(seconds * 8000); t = np.arange(n) / 8000
    phase = 2 * np.pi * np.cumsum(130 + 20 * np.sin(2 * np.pi * 0.7 * t + seed)) / 8000
    x = sum(np.sin(k * phase + rng.uniform(0, 6.28)) / k for k in range(1, 20))
    return (4000 * x * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.int16)


class FlakyProxy:
    "A TCP proxy in front of a server (PostgreSQL, say) that can be made to stall or to drop every connection."
    def __init__(self, port: int, host: str = '127.0.0.1'):
        self.target, self.mode, self.server, self.pipes, self.writers = (host, port), 'pass', None, set(), set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, '127.0.0.1', 0)
        return self.server.sockets[0].getsockname()[1]

    async def _client(self, reader, writer):
        if self.mode == 'down': writer.close(); return
        try: up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError: writer.close(); return
        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    while self.mode == 'stall': await asyncio.sleep(0.05)  # hold the bytes: a database that stopped answering
                    if self.mode == 'down': break
                    w.write(data); await w.drain()
            except (ConnectionError, OSError): pass
            finally: w.close()
        for t in (asyncio.create_task(pipe(reader, up_w)), asyncio.create_task(pipe(up_r, writer))):
            self.pipes.add(t); t.add_done_callback(self.pipes.discard)
        self.writers |= {writer, up_w}

    def down(self):
        "Drop every connection and refuse new ones (a database restart)."
        self.mode = 'down'
        for w in self.writers: w.close()
        self.writers = set()

    def stall(self): self.mode = 'stall'
    def up(self): self.mode = 'pass'

    async def close(self):
        self.down()
        self.server.close()
        for t in list(self.pipes): t.cancel()
        await asyncio.gather(*self.pipes, return_exceptions=True)
