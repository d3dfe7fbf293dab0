"""Ready to deploy and to watch: /ready against a database that goes away and comes back, /metrics after
a simulated call, JSON logs with the call's SID, errors to a local stand-in for Sentry, the daily spend
alert, `serve` stopped with Ctrl+C, and the container files checked against the package."""
import asyncio, configparser, io, json, logging, os, re, shlex, signal, socket, subprocess, sys, time, tomllib, urllib.request
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from artist_hotline.notify import TWILIO_SENT, fake_twilio_api
from artist_hotline.ops import setup_logging
from artist_hotline.providers import CannedLLM, EchoSTT, ProviderError, Providers, ToneTTS
from artist_hotline.server import create_app
from artist_hotline.settings import ENV_NAMES, Settings
from artist_hotline.simulate import Step, simulate_call
from conftest import voiced

ROOT = Path(__file__).resolve().parent.parent
METRICS_TOKEN = 'metrics-token'


def engines(paid: bool = False) -> Providers:
    "Fake engines; `paid` names them as cloud ones, so their usage has a price."
    p = Providers(EchoSTT(['tell me about your paintings'] * 4), CannedLLM('Boats are wonderful. Tell me more?'), ToneTTS())
    if paid: p.stt.name, p.llm.name, p.tts.name = 'openai:whisper-1', 'openai:gpt-4o-mini', 'elevenlabs:flash'
    return p

async def hotline(aiohttp_server, tmp_path, paid=False, **settings):
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/calls.sqlite3', **settings), providers=engines(paid))
    server = await aiohttp_server(app)
    return app, str(server.make_url('')).rstrip('/')


async def test_metrics_after_one_call(aiohttp_server, aiohttp_client, tmp_path):
    app, base = await hotline(aiohttp_server, tmp_path, metrics_token=METRICS_TOKEN)
    await simulate_call(base, [Step(pcm=voiced(0.9), pause_s=0.3)], speed=0)
    await asyncio.sleep(0.3)
    import aiohttp
    async with aiohttp.ClientSession() as http:
        assert (await http.get(f'{base}/metrics')).status == 401
        r = await http.get(f'{base}/metrics', headers={'Authorization': f'Bearer {METRICS_TOKEN}'})
        text = await r.text()
    assert r.status == 200 and r.headers['Content-Type'].startswith('text/plain')
    assert re.search(r'^artist_hotline_calls_total 1\.0$', text, re.M), [l for l in text.splitlines() if 'calls_total' in l or 'voice_to' in l]
    assert re.search(r'^artist_hotline_voice_to_voice_seconds_count 1\.0$', text, re.M)
    assert re.search(r'^artist_hotline_turns_total\{outcome="replied"\} [1-9]\d*\.0$', text, re.M), [l for l in text.splitlines() if l.startswith("artist_hotline_turns")]
    assert re.search(r'^artist_hotline_stage_seconds_count\{stage="first_sent"\} 1\.0$', text, re.M)
    assert re.search(r'^artist_hotline_calls_open 0\.0$', text, re.M)
    for name in ('barge_ins_total', 'fallbacks_total', 'malformed_messages_total'): assert f'artist_hotline_{name} 0.0' in text


async def test_metrics_are_closed_without_a_token(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3'), providers=engines()))
    assert (await client.get('/metrics')).status == 404


class Plug:
    "A TCP proxy in front of PostgreSQL that can be pulled out and put back."
    def __init__(self, target: int): self.target, self.writers, self.port = target, set(), 0

    async def put_in(self):
        self.server = await asyncio.start_server(self._serve, '127.0.0.1', self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def pull_out(self):
        self.server.close()
        for w in list(self.writers): w.transport.abort()
        self.writers.clear()

    async def _serve(self, reader, writer):
        try: up_r, up_w = await asyncio.open_connection('127.0.0.1', self.target)
        except OSError: return writer.close()
        self.writers |= {writer, up_w}
        async def pipe(a, b):
            try:
                while (data := await a.read(65536)):
                    b.write(data); await b.drain()
            except (ConnectionError, OSError): pass
            finally: b.close()
        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))


async def test_ready_follows_the_database(aiohttp_client, pg_url):
    "/ready is 200 with the store up, 503 with the reason when PostgreSQL is unreachable, and 200 again once it is back."
    m = re.search(r'@127\.0\.0\.1:(\d+)/', pg_url)
    plug = Plug(int(m.group(1)))
    await plug.put_in()
    app = create_app(Settings(database_url=pg_url.replace(m.group(0), f'@127.0.0.1:{plug.port}/'), store_timeout_s=1), providers=engines())
    client = await aiohttp_client(app)
    r = await client.get('/ready')
    assert r.status == 200 and (await r.json()) == {'status': 'ready', 'reasons': []}
    assert (await client.get('/health')).status == 200
    await plug.pull_out()
    r = await client.get('/ready')
    body = await r.json()
    assert r.status == 503 and body['status'] == 'not ready' and 'call store unreachable' in body['reasons'][0]
    assert (await client.get('/health')).status == 200  # liveness stays: the process is fine
    await plug.put_in()
    for _ in range(50):  # the pool's dead connections are found and replaced
        if (r := await client.get('/ready')).status == 200: break
        await asyncio.sleep(0.2)
    assert r.status == 200
    await plug.pull_out()


async def test_ready_fails_while_writes_cannot_land(aiohttp_client, tmp_path, monkeypatch):
    "The store answers reads but refuses writes (a full disk): /ready is 503 and says so, and 200 once the writes land."
    import sqlite3
    import sqlalchemy as sa
    from artist_hotline.store import Store
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3'), providers=engines())
    client = await aiohttp_client(app)
    assert (await client.get('/ready')).status == 200
    apply = Store.apply
    async def full(self, writes): raise sa.exc.OperationalError('INSERT', {}, sqlite3.OperationalError('database or disk is full'))
    monkeypatch.setattr(Store, 'apply', full)
    sim = await simulate_call(str(client.make_url('')).rstrip('/'), [Step(pcm=voiced(0.9), pause_s=0.3)], speed=0)
    for _ in range(100):
        if (r := await client.get('/ready')).status == 503: break
        await asyncio.sleep(0.05)
    body = await r.json()
    assert r.status == 503 and any('writes are not landing (' in x and 'disk is full' in x for x in body['reasons']), body
    monkeypatch.setattr(Store, 'apply', apply)  # room again: the queued writes land
    for _ in range(200):
        if (r := await client.get('/ready')).status == 200: break
        await asyncio.sleep(0.05)
    assert r.status == 200 and sim.turns


async def test_ready_is_503_while_engines_are_unusable(aiohttp_client, tmp_path):
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3', openai_api_key='sk', openai_base_url='http://127.0.0.1:9/v1',
                              llm_provider='openai', stt_provider='pocketsphinx'))
    client = await aiohttp_client(app)
    r = await client.get('/ready')
    assert r.status == 503 and any('127.0.0.1:9' in x for x in (await r.json())['reasons'])


async def test_json_logs_carry_the_call_sid(aiohttp_server, tmp_path):
    buf = io.StringIO()
    setup_logging('json', 'INFO', buf)
    try:
        app, base = await hotline(aiohttp_server, tmp_path)
        sim = await simulate_call(base, [Step(pcm=voiced(0.9), pause_s=0.3)], speed=0)
        await asyncio.sleep(0.3)
    finally: setup_logging('text', 'WARNING')
    lines = [json.loads(l) for l in buf.getvalue().splitlines()]  # every line is one JSON object
    turns = [l for l in lines if l['logger'] == 'artist_hotline.call' and l['msg'].startswith('turn')]
    assert turns and all(l['call_sid'] == sim.call_sid for l in turns)
    assert any(l.get('outcome') == 'replied' and l.get('first_sent') for l in turns)  # the turn's fields, as fields
    assert all(l['call_sid'] == sim.call_sid for l in lines if l['logger'] == 'artist_hotline.call')


SECRETS = dict(openai_api_key='sk-proj-abcdefghijklmnop1234', elevenlabs_api_key='xi-abcdefghijkl5678', calls_ui_token='ui-token-9876',
               metrics_token='metrics-9876', smtp_password='hunter2-smtp')

class KeyEchoingSTT(EchoSTT):
    "A provider that quotes the key it was sent in its error, as some do."
    name = 'openai:whisper-1'
    async def transcribe(self, pcm, sr=8000): raise ProviderError(f"401 Unauthorized: incorrect API key provided: {SECRETS['openai_api_key']}")


async def test_no_configured_secret_reaches_the_log(aiohttp_server, tmp_path):
    "A whole call whose provider echoes its key, logged at INFO as `serve` logs: the failure is there, no secret is."
    s = Settings(database_url=f'sqlite:///{tmp_path}/calls.sqlite3', **SECRETS)
    buf = io.StringIO()
    setup_logging('text', 'INFO', buf, secrets=s.secrets)
    try:
        app = create_app(s, providers=Providers(KeyEchoingSTT(), CannedLLM('Hello.'), ToneTTS()))
        base = str((await aiohttp_server(app)).make_url('')).rstrip('/')
        await simulate_call(base, [Step(pcm=voiced(0.9), pause_s=0.3)], speed=0)
        await asyncio.sleep(0.3)
    finally: setup_logging('text', 'WARNING')
    out = buf.getvalue()
    assert 'incorrect API key provided: [redacted]' in out, out[-2000:]  # the failure is logged...
    assert not [k for k, v in SECRETS.items() if v in out]  # ...and no secret anywhere in the log


async def test_errors_reach_sentry(aiohttp_server):
    "With a DSN, an error logged by the hotline arrives at the tracker (a local stand-in for Sentry's envelope endpoint)."
    import sentry_sdk
    from artist_hotline.ops import init_sentry
    got, arrived = [], asyncio.Event()
    async def envelope(request):
        body = (await request.read()).decode('utf-8', 'replace')  # aiohttp has undone the gzip
        got.append(body)
        if 'budget alert not sent' in body: arrived.set()
        return web.json_response({})
    fake = web.Application(); fake.router.add_post('/api/{project}/envelope/', envelope)
    server = await aiohttp_server(fake)
    assert init_sentry(f'http://public@127.0.0.1:{server.port}/42', release='test')
    try:
        logging.getLogger('artist_hotline.server').error('budget alert not sent: %s', 'a test')
        # the SDK sends from its own thread: wait for the envelope itself (a busy machine can take longer than a flush)
        await asyncio.wait_for(arrived.wait(), 60)
    finally: sentry_sdk.init(dsn=None)
    assert any('budget alert not sent' in g for g in got), got


async def test_the_daily_budget_alert_is_sent_once(aiohttp_server, tmp_path):
    rest = fake_twilio_api('AC' + '3' * 32, 'rest-token')
    api = str((await aiohttp_server(rest)).make_url('')).rstrip('/')
    app, base = await hotline(aiohttp_server, tmp_path, paid=True, daily_budget_usd=1e-6, notify_sms_to='+15550009999',
                              notify_sms_from='+15550000001', twilio_account_sid='AC' + '3' * 32, twilio_auth_token='rest-token',
                              twilio_api_base=api, metrics_token=METRICS_TOKEN)
    for _ in range(2): await simulate_call(base, [Step(pcm=voiced(0.9), pause_s=0.3)] * 2, speed=0, auth_token='rest-token')
    await asyncio.sleep(0.3)
    alerts = [m for m in rest[TWILIO_SENT] if 'daily budget' in m.get('Body', '')]
    assert len(alerts) == 1 and alerts[0]['To'] == '+15550009999'


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_serve_logs_json_and_stops_on_ctrl_c_without_a_traceback(tmp_path):
    port = _free_port()
    env = dict(os.environ, HOST='127.0.0.1', PORT=str(port), DATABASE_URL=f'sqlite:///{tmp_path}/calls.sqlite3', LOG_FORMAT='json')
    proc = subprocess.Popen([str(Path(sys.executable).parent / 'artist-hotline'), 'serve'], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300  # only a hang fails: on a busy machine the engines take a while to load
        while True:
            try: ready = json.loads(urllib.request.urlopen(f'http://127.0.0.1:{port}/ready', timeout=2).read()); break
            except OSError:  # not up yet, or 503 while the engines load
                if proc.poll() is not None or time.monotonic() > deadline: raise AssertionError(proc.stdout.read1().decode())
                time.sleep(0.1)
        assert ready['status'] == 'ready'
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    out = proc.stdout.read().decode()
    assert code == 0 and 'Traceback' not in out, out
    lines = [l for l in out.splitlines() if l.strip()]
    assert lines and all(isinstance(json.loads(l), dict) for l in lines), out


def test_container_files_match_the_package():
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    script = cfg['DEFAULT']['console_scripts'].split('=')[0]
    docker = (ROOT / 'Dockerfile').read_text()
    runs = [l for l in docker.splitlines() if l.startswith('RUN ')]
    assert re.search(r'^ARG EXTRAS=$', docker, re.M)  # the lean server by default; --build-arg EXTRAS=offline adds the offline engines
    assert any('pip install ".${EXTRAS:+[$EXTRAS]}"' in l for l in runs)  # never [workbench] or [dev]
    cmd = json.loads(re.search(r'^CMD (\[.*\])$', docker, re.M).group(1))
    assert cmd == [script, 'serve']
    assert re.search(r'^USER (?!root)\w+', docker, re.M) and 'HEALTHCHECK' in docker and '/health' in docker
    assert re.search(r'^FROM python:3\.\d+-slim', docker, re.M)
    compose = yaml.safe_load((ROOT / 'compose.yaml').read_text())
    hot, db = compose['services']['hotline'], compose['services']['db']
    assert hot['env_file'] == '.env' and hot['depends_on']['db']['condition'] == 'service_healthy'
    env = hot['environment']
    assert set(env) <= set(ENV_NAMES), set(env) - set(ENV_NAMES)  # every setting it names is one the server reads
    assert env['DATABASE_URL'].startswith('postgresql://') and '@db:5432/' in env['DATABASE_URL']
    Settings.from_env({k: str(v) for k, v in env.items()}, env_file=None)  # and each value is valid
    assert db['image'].startswith('postgres:')
    procfile = (ROOT / 'Procfile').read_text().split(':', 1)
    assert procfile[0] == 'web' and shlex.split(procfile[1])[:2] == [script, 'serve']
    fly = tomllib.loads((ROOT / 'fly.toml').read_text())
    assert fly['http_service']['internal_port'] == 8080 and fly['http_service']['checks'][0]['path'] == '/ready'
    assert (ROOT / 'LICENSE').read_text().lstrip().startswith('Apache License')


def test_the_server_install_needs_no_workbench():
    "What `serve` imports is in the package's own requirements; the workbench's are an extra."
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    base = {re.split(r'[<>=\[; ]', r, 1)[0].lower() for r in shlex.split(cfg['DEFAULT']['requirements'])}
    for heavy in ('librosa', 'pandas', 'matplotlib', 'jupyterlab', 'nbdev'): assert heavy not in base
    code = ('import sys, artist_hotline.server, artist_hotline.cli, artist_hotline.engines as e\n'
            'from artist_hotline.settings import Settings\n'
            'e.make_providers(Settings(openai_api_key="k", elevenlabs_api_key="k", elevenlabs_voice_id="v"), e.load_persona())\n'
            'e.make_providers(Settings(), e.load_persona())\n'
            'print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))')
    mods = set(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split())
    assert not mods & {'librosa', 'pandas', 'matplotlib', 'scipy', 'sklearn', 'numba', 'IPython', 'nbdev', 'execnb'}, mods
