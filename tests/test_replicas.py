"Two `artist-hotline serve` replicas on one PostgreSQL database, as behind a load balancer: any replica takes any call, the limits hold across them, a killed replica loses at most the turn in flight, a database outage loses no finished turn."
import asyncio, json, os, signal, socket, subprocess, sys, time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from artist_hotline.fakecloud import Engines, running_fake_cloud
from artist_hotline.offline import ScriptedBrain, espeak_synth
from artist_hotline.persona import load_persona
from artist_hotline.providers import EchoSTT
from artist_hotline.settings import ENV_NAMES
from artist_hotline.simulate import dial, twilio_signature, voice_params
from artist_hotline.store import Store
from conftest import FlakyProxy, voiced

TOKEN, PUBLIC = 'replica-auth-token', 'https://hotline.example'
SERVE = str(Path(sys.executable).parent / 'artist-hotline')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


class Replica:
    "One `artist-hotline serve` process."
    def __init__(self, name: str, db: str, cloud, tmp: Path, **env):
        self.name, self.port = name, free_port()
        self.base = f'http://127.0.0.1:{self.port}'
        settings = dict(HOST='127.0.0.1', PORT=str(self.port), REPLICA=name, DATABASE_URL=db, TWILIO_AUTH_TOKEN=TOKEN, PUBLIC_URL=PUBLIC,
                        OPENAI_API_KEY='sk-test', OPENAI_BASE_URL=cloud.openai_base_url, ELEVENLABS_API_KEY='xi-test',
                        ELEVENLABS_BASE_URL=cloud.elevenlabs_base_url, ELEVENLABS_VOICE_ID='voice-1', HEARTBEAT_S='1', STORE_TIMEOUT_S='1',
                        STORE_SPILL=str(tmp / f'{name}-spill.jsonl'), UVLOOP='false', SHUTDOWN_TIMEOUT_S='5') | env
        self.log = (tmp / f'{name}.log').open('w')
        clean = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
        self.proc = subprocess.Popen([SERVE, 'serve'], env=clean | settings, cwd=tmp, stdout=self.log, stderr=subprocess.STDOUT)

    async def up(self):
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    if (await http.get(self.base + '/health')).status == 200: return self
                except aiohttp.ClientError: pass
                if self.proc.poll() is not None: break
                await asyncio.sleep(0.1)
        raise AssertionError(f'replica {self.name} did not start: ' + Path(self.log.name).read_text()[-3000:])

    async def health(self) -> dict:
        async with aiohttp.ClientSession() as http: return await (await http.get(self.base + '/health')).json()

    def stop(self, sig=signal.SIGINT):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try: self.proc.wait(30)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        self.log.close()


@pytest.fixture
async def cloud():
    engines = Engines(EchoSTT(['tell me about your paintings'] * 200), ScriptedBrain(load_persona()), espeak_synth)
    async with running_fake_cloud('instant', engines=engines) as fc: yield fc


@pytest.fixture
async def replicas(cloud, pg_url, tmp_path):
    "Start replicas A and B (with `**env`) on one database (`db` overrides it); stopped at the end."
    started = []
    async def start(db=None, **env):
        rs = [Replica(n, db or pg_url, cloud, tmp_path, **env) for n in 'AB']
        started.extend(rs)
        return [await r.up() for r in rs]
    yield start
    for r in started: r.stop()


def ws_of(r: Replica) -> str: return r.base.replace('http', 'ws') + '/voice-stream'


async def post_voice(r: Replica, params: dict):
    async with aiohttp.ClientSession() as http:
        resp = await http.post(r.base + '/voice', data=params, headers={'X-Twilio-Signature': twilio_signature(TOKEN, PUBLIC + '/voice', params)})
        return resp.status, await resp.text()


async def turn(stream, seed=0):
    "One caller turn, and its reply heard to the end."
    t = await stream.say(np.r_[voiced(0.8, seed), np.zeros(6400, np.int16)])
    assert await stream.wait_reply(t, 10, 0.3, 20)


async def stored(db: str, sid: str) -> dict | None:
    async with Store(db) as s: return await s.get_call(sid)


async def test_webhook_on_a_stream_on_b(replicas, pg_url):
    a, b = await replicas()
    stream = await dial(a.base, TOKEN, speed=0, signed_url=PUBLIC + '/voice', ws_url=ws_of(b))
    assert await stream.wait_reply(0, 10, 0.3, 20)  # B greets
    await turn(stream)
    assert (await b.health())['open_calls_here'] == 1 and (await a.health())['open_calls_here'] == 0
    await stream.stop()
    for _ in range(50):
        c = await stored(pg_url, stream.call_sid)
        if c and c['ended_at']: break
        await asyncio.sleep(0.1)
    assert c['replica'] == 'B' and [t['caller_text'] for t in c['turns'] if t['kind'] == 'reply'] == ['tell me about your paintings']


async def test_twenty_calls_at_once_from_one_number_across_replicas(replicas):
    a, b = await replicas(CALLS_PER_HOUR='3')
    got = await asyncio.gather(*[post_voice((a, b)[i % 2], voice_params(f'CA{i:032x}', 'AC' + '1' * 32, '+15556660001')) for i in range(20)])
    assert all(status == 200 for status, _ in got)
    assert sum('<Connect' in t for _, t in got) == 3 and sum('<Say' in t for _, t in got) == 17


async def test_a_killed_replica_loses_at_most_the_turn_in_flight(replicas, pg_url):
    a, b = await replicas()
    stream = await dial(a.base, TOKEN, speed=0, signed_url=PUBLIC + '/voice', ws_url=ws_of(b))
    assert await stream.wait_reply(0, 10, 0.3, 20)
    await turn(stream, 0)
    await turn(stream, 1)
    await stream.say(voiced(0.6, 2))  # a third turn, in flight
    b.stop(signal.SIGKILL)
    await stream.close()
    for _ in range(100):  # A's heartbeat finds B silent and ends the call it held
        c = await stored(pg_url, stream.call_sid)
        if c['ended_at']: break
        await asyncio.sleep(0.2)
    replies = [t for t in c['turns'] if t['kind'] == 'reply']
    assert c['outcome'] == 'replica lost' and len(replies) >= 2
    assert [t['caller_text'] for t in replies[:2]] == ['tell me about your paintings'] * 2
    assert (await a.health())['open_calls'] == 0


async def test_a_database_outage_mid_call_loses_no_finished_turn(replicas, pg_url, tmp_path):
    proxy = FlakyProxy(5432)
    port = await proxy.start()
    try:
        a, b = await replicas(db=pg_url.replace('127.0.0.1:5432', f'127.0.0.1:{port}'))
        stream = await dial(a.base, TOKEN, speed=0, signed_url=PUBLIC + '/voice', ws_url=ws_of(b))
        assert await stream.wait_reply(0, 10, 0.3, 20)
        await turn(stream, 0)
        proxy.down()
        outage = time.monotonic()
        await turn(stream, 1)
        await turn(stream, 2)
        t0 = time.monotonic()
        status, twiml = await asyncio.wait_for(post_voice(a, voice_params('CA' + 'e' * 32, 'AC' + '1' * 32)), 10)
        answered_in = time.monotonic() - t0
        assert status == 200 and '<Connect' in twiml, (answered_in, twiml)  # answered, degraded, well within Twilio's 15 s
        assert (await b.health())['store']['pending_writes'] > 0
        await asyncio.sleep(max(0, 15 - (time.monotonic() - outage)))  # 15 s without the database
        proxy.up()
        await stream.stop()
        for _ in range(150):
            ha, hb = await a.health(), await b.health()
            if ha['store']['pending_writes'] == hb['store']['pending_writes'] == hb['open_calls_here'] == 0: break
            await asyncio.sleep(0.2)
        c = await stored(pg_url, stream.call_sid)
        replies = [t for t in c['turns'] if t['kind'] == 'reply']
        assert [(t['caller_text'], t['outcome']) for t in replies] == [('tell me about your paintings', 'replied')] * 3
        assert c['ended_at'] is not None and await stored(pg_url, 'CA' + 'e' * 32) is not None
    finally:
        proxy.up(); await proxy.close()
