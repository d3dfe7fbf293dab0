"What a running server survives: replayed webhooks, leaked slots, races on the limits, a store that stalls or goes away, bad bodies and sockets, secrets in errors."
import asyncio, json, os, time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import sqlalchemy as sa

from artist_hotline.providers import CannedLLM, EchoSTT, LanguageModel, ProviderError, Providers, ToneTTS
from artist_hotline.server import CALLS, FINISHED, SETTINGS, SINK, STATS, STORE, create_app, stream_key, stream_token
from artist_hotline.settings import CallSettings, Settings
from artist_hotline.simulate import Hangup, dial, parse_twiml, twilio_signature, voice_params
from artist_hotline.store import calls as calls_table, make_engine
from conftest import FlakyProxy, voiced

TOKEN = 'test-auth-token'
PUBLIC = 'https://hotline.example'


def fakes(texts=('hello there',) * 20, reply='Nice to hear you. What do you make?', llm=None):
    return Providers(EchoSTT(list(texts)), llm or CannedLLM(reply), ToneTTS())


@pytest.fixture
async def hotline(aiohttp_server, tmp_path):
    "Start hotline servers on 127.0.0.1 (Twilio-signed, one public URL); returns (app, base URL)."
    async def start(providers=None, db=None, **settings):
        kw = dict(twilio_auth_token=TOKEN, public_url=PUBLIC, database_url=db or f'sqlite:///{tmp_path}/calls.sqlite3',
                  recordings_dir=str(tmp_path / 'rec'), store_spill=str(tmp_path / 'spill.jsonl')) | settings
        app = create_app(Settings(**kw), providers=providers or fakes())
        server = await aiohttp_server(app)
        return app, str(server.make_url('')).rstrip('/')
    return start


def ws_of(base): return base.replace('http', 'ws', 1) + '/voice-stream'


async def call_on(a, b=None, **kw):
    "Ring A's webhook; open the stream on B (default A)."
    return await dial(a, TOKEN, speed=0, signed_url=PUBLIC + '/voice', ws_url=ws_of(b or a), **kw)


async def post_voice(base, params):
    async with aiohttp.ClientSession() as http:
        r = await http.post(base + '/voice', data=params, headers={'X-Twilio-Signature': twilio_signature(TOKEN, PUBLIC + '/voice', params)})
        return r.status, await r.text()


async def row(app, sid):
    return await app[STORE]._tx(lambda c: c.execute(sa.select(calls_table).where(calls_table.c.sid == sid)).first())


async def test_webhook_on_one_replica_stream_on_the_other(hotline, db_url):
    (a, base_a), (b, base_b) = [await hotline(db=db_url, replica=n) for n in 'AB']
    stream = await call_on(base_a, base_b)
    assert await stream.wait_reply(0, 5, 0.3, 10)  # the greeting, from B
    t = await stream.say(np.r_[voiced(0.8), np.zeros(6400, np.int16)])
    assert await stream.wait_reply(t, 5, 0.3, 10)
    assert list(b[CALLS]) == [stream.call_sid] and not a[CALLS]
    await stream.stop()
    await asyncio.sleep(0.3)
    r = await row(a, stream.call_sid)
    assert r.replica == 'B' and r.stream_sid == stream.stream_sid and r.ended_at is not None


async def test_a_replayed_webhook_reopens_and_rewrites_nothing(hotline):
    app, base = await hotline()
    stream = await call_on(base, from_='+15551110001')
    await stream.wait_reply(0, 5, 0.3, 10)
    replay = voice_params(stream.call_sid, stream.account_sid, '+15559999999')
    status, twiml = await post_voice(base, replay)  # while the call streams
    assert status == 200 and '<Hangup' in twiml and '<Connect' not in twiml
    await stream.stop(); await asyncio.sleep(0.3)
    before = await row(app, stream.call_sid)
    status, twiml = await post_voice(base, replay)  # after it ended
    after = await row(app, stream.call_sid)
    assert '<Hangup' in twiml and before == after and after.caller == '+15551110001' and after.ended_at is not None
    assert app[STATS]['replays'] == 2


async def test_a_webhook_retried_before_its_stream_gets_a_fresh_token_and_the_same_row(hotline):
    app, base = await hotline()
    params = voice_params('CA' + '1' * 32, 'AC' + '1' * 32, '+15551110002')
    first, second = [await post_voice(base, params) for _ in range(2)]
    assert '<Connect' in first[1] and '<Connect' in second[1]
    assert (await app[STORE].open_calls()) == 1


async def test_a_start_that_fails_its_checks_takes_nothing(hotline):
    app, base = await hotline()
    stream = await call_on(base, start=False)
    good = stream.twiml.parameters
    key = stream_key(Settings(twilio_auth_token=TOKEN))
    for params in ({**good, 'token': good['token'][:-2] + 'xx'}, {**good, 'token': stream_token(key, 'CA' + '9' * 32, 60)}, {}):
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(ws_of(base), headers={'X-Twilio-Signature': twilio_signature(TOKEN, 'wss://hotline.example/voice-stream')})
            await ws.send_str(json.dumps({'event': 'start', 'streamSid': 'MZ9', 'start': {'callSid': stream.call_sid, 'customParameters': params}}))
            msg = await ws.receive()
            assert msg.data == 1008 and msg.extra.startswith('stream token')
    await stream.send_connected(); await stream.send_start()  # the real stream, after the bad ones
    assert await stream.wait_reply(0, 5, 0.3, 10)
    await stream.stop()


async def test_an_expired_token_is_refused(hotline):
    app, base = await hotline(token_ttl_s=0.01)
    stream = await call_on(base, start=False)
    await asyncio.sleep(1.1)
    await stream.send_connected(); await stream.send_start()
    with pytest.raises(Hangup):
        for _ in range(100): await stream.fill(0.02, waiting=True)
    assert stream.ws.close_code == 1008


async def test_status_callback_ends_the_row_and_health_counts_what_the_limit_counts(hotline, db_url):
    app, base = await hotline(db=db_url, max_open_calls=5)
    for i in range(3): await post_voice(base, voice_params(f'CA{i:032x}', 'AC' + '1' * 32, f'+1555111000{i}'))
    async with aiohttp.ClientSession() as http:
        h = await (await http.get(base + '/health')).json()
        assert (h['open_calls'], h['open_calls_here'], h['max_open_calls']) == (3, 0, 5)
        done = voice_params(f'CA{0:032x}', 'AC' + '1' * 32, CallStatus='completed', CallDuration='12')
        r = await http.post(base + '/call-status', data=done, headers={'X-Twilio-Signature': twilio_signature(TOKEN, PUBLIC + '/call-status', done)})
        assert r.status == 204
        await app[SINK].flush()
        h = await (await http.get(base + '/health')).json()
        assert h['open_calls'] == 2
    assert (await row(app, f'CA{0:032x}')).outcome == 'call completed'


async def test_a_call_whose_stream_never_came_is_ended(hotline):
    app, base = await hotline(token_ttl_s=0.1, heartbeat_s=0.2)
    await post_voice(base, voice_params('CA' + '2' * 32, 'AC' + '1' * 32))
    assert await app[STORE].open_calls() == 1
    ended = await app[STORE].heartbeat('me', 0.2, stream_wait_s=0)
    assert ended == {'no stream': 1} and await app[STORE].open_calls() == 0


async def test_a_restarted_replica_ends_the_calls_of_its_previous_life(tmp_path, aiohttp_server):
    from artist_hotline.store import Store
    db = f'sqlite:///{tmp_path}/calls.sqlite3'
    async with Store(db) as store:  # what a replica left behind when it died mid-call
        await store.admit('CA' + '5' * 32, '+15551110005')
        await store.claim_stream('CA' + '5' * 32, 'MZ5', 'hotline-0')
        await store.heartbeat('hotline-0')
    again = create_app(Settings(database_url=db, replica='hotline-0'), providers=fakes())
    await aiohttp_server(again)  # the same replica, started again
    r = await row(again, 'CA' + '5' * 32)
    assert r.ended_at is not None and r.outcome == 'replica restarted'


@pytest.mark.parametrize('replicas', [1, 2])
async def test_twenty_calls_at_once_from_one_number_only_three_connect(hotline, db_url, replicas):
    servers = [await hotline(db=db_url, calls_per_hour=3, replica=f'R{i}') for i in range(replicas)]
    got = await asyncio.gather(*[post_voice(servers[i % replicas][1], voice_params(f'CA{i:032x}', 'AC' + '1' * 32, '+1 (555) 222-0001'))
                                 for i in range(20)])
    assert sum('<Connect' in t for _, t in got) == 3 and sum('<Say' in t for _, t in got) == 17
    assert len(await servers[0][0][STORE].refusals()) == 17


async def test_the_open_calls_cap_holds_under_a_burst(hotline, db_url):
    app, base = await hotline(db=db_url, max_open_calls=4)
    got = await asyncio.gather(*[post_voice(base, voice_params(f'CA{i:032x}', 'AC' + '1' * 32, f'+1555333{i:04d}')) for i in range(12)])
    assert sum('<Connect' in t for _, t in got) == 4


async def test_anonymous_callers_share_one_limit(hotline):
    app, base = await hotline(calls_per_hour=2)
    got = [await post_voice(base, voice_params(f'CA{i:032x}', 'AC' + '1' * 32, caller)) for i, caller in
           enumerate(['anonymous', '', '+266696687', 'Restricted'])]
    assert ['<Connect' in t for _, t in got] == [True, True, False, False]


async def test_a_stalled_database_does_not_hold_the_webhook(hotline, pg_url):
    proxy = FlakyProxy(5432)
    port = await proxy.start()
    url = pg_url.replace('127.0.0.1:5432', f'127.0.0.1:{port}')
    app, base = await hotline(db=url, store_timeout_s=1, calls_per_hour=3)
    try:
        proxy.stall()
        t0 = time.monotonic()
        status, twiml = await asyncio.wait_for(post_voice(base, voice_params('CA' + '3' * 32, 'AC' + '1' * 32)), 10)
        waited = time.monotonic() - t0
        assert status == 200 and '<Connect' in twiml, twiml  # taken, degraded: limits unchecked
        assert app[STATS]['store_degraded'] == 1, waited
        proxy.down()
        status, twiml = await asyncio.wait_for(post_voice(base, voice_params('CA' + '4' * 32, 'AC' + '1' * 32)), 10)
        assert status == 200 and '<Connect' in twiml  # a reset database: no 500
        async with aiohttp.ClientSession() as http:
            h = await asyncio.wait_for((await http.get(base + '/health')).json(), 10)
        assert h['status'] == 'degraded' and h['open_calls'] is None
        proxy.up()
        assert await app[SINK].flush(20)  # the queued rows land once the database is back
        assert (await row(app, 'CA' + '3' * 32)) is not None and (await row(app, 'CA' + '4' * 32)) is not None
    finally:
        proxy.up(); await proxy.close()


async def test_an_outage_mid_call_loses_no_finished_turn(hotline, pg_url):
    proxy = FlakyProxy(5432)
    port = await proxy.start()
    app, base = await hotline(db=pg_url.replace('127.0.0.1:5432', f'127.0.0.1:{port}'), store_timeout_s=1)
    try:
        stream = await call_on(base)
        await stream.wait_reply(0, 5, 0.3, 10)
        proxy.down()
        for i in range(3):  # three turns while the database is away
            t = await stream.say(np.r_[voiced(0.8, i), np.zeros(6400, np.int16)])
            assert await stream.wait_reply(t, 5, 0.3, 10)
        assert app[SINK].pending > 0
        await asyncio.sleep(1)
        proxy.up()
        await stream.stop(); await asyncio.sleep(0.3)
        assert await app[SINK].flush(30)
        c = await app[STORE].get_call(stream.call_sid)
        assert [t['outcome'] for t in c['turns'] if t['kind'] == 'reply'] == ['replied'] * 3 and c['ended_at'] is not None
    finally:
        proxy.up(); await proxy.close()


async def test_read_only_sqlite_mid_call_loses_no_turn(hotline, tmp_path):
    app, base = await hotline()
    store = app[STORE]
    stream = await call_on(base)
    await stream.wait_reply(0, 5, 0.3, 10)
    writable, store.engine = store.engine, make_engine(f'sqlite:///file:{tmp_path}/calls.sqlite3?mode=ro&uri=true')
    for i in range(3):
        t = await stream.say(np.r_[voiced(0.8, i), np.zeros(6400, np.int16)])
        assert await stream.wait_reply(t, 5, 0.3, 10)
    assert app[SINK].pending > 0 and 'readonly' in app[SINK].last_error
    store.engine.dispose(); store.engine = writable
    await stream.stop(); await asyncio.sleep(0.3)
    assert await app[SINK].flush(10)
    c = await store.get_call(stream.call_sid)
    assert len([t for t in c['turns'] if t['kind'] == 'reply']) == 3


async def test_long_values_from_outside_fit(hotline, db_url):
    app, base = await hotline(db=db_url)
    sip = 'sip:+15554440001@a-rather-long-sip-trunk-hostname.carrier.example.com;user=phone'
    assert len(sip) >= 70
    stream = await call_on(base, from_=sip, params={'Caller': sip})
    await stream.wait_reply(0, 5, 0.3, 10)
    for _ in range(210): await stream.send_dtmf('5')
    await stream.stop(); await asyncio.sleep(0.5)
    assert await app[SINK].flush(20)
    r = await row(app, stream.call_sid)
    assert (r.caller, r.caller_key, len(r.dtmf)) == (sip, '+15554440001', 210)


async def test_an_unwritable_recordings_folder_still_ends_the_call(hotline, tmp_path):
    blocker = tmp_path / 'not-a-folder'
    blocker.write_text('a file where the folder should be')
    app, base = await hotline(record_calls=True, recordings_dir=str(blocker / 'calls'))
    stream = await call_on(base)
    await stream.wait_reply(0, 10, 0.3, 20)
    await stream.stop(); await asyncio.sleep(0.5)
    await app[SINK].flush()
    c = await app[STORE].get_call(stream.call_sid)
    assert c['ended_at'] is not None and c['recording'] is None and 'recording_failed' in [e['kind'] for e in c['events']]


async def test_a_socket_that_never_starts_is_closed(hotline):
    app, base = await hotline(start_timeout_s=0.5)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(ws_of(base), headers={'X-Twilio-Signature': twilio_signature(TOKEN, 'wss://hotline.example/voice-stream')})
        await ws.send_str(json.dumps({'event': 'connected', 'protocol': 'Call', 'version': '1.0.0'}))
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert (msg.data, msg.extra) == (1008, 'no start')
    assert app[STATS]['no_start'] == 1


async def test_webhook_bodies_are_bounded_and_checked(hotline):
    app, base = await hotline(webhook_timeout_s=0.5, max_webhook_bytes=2048)
    form = {'Content-Type': 'application/x-www-form-urlencoded'}
    async with aiohttp.ClientSession() as http:
        assert (await http.post(base + '/voice', data=b'CallSid=' + b'x' * 5000, headers=form)).status == 413
        assert (await http.post(base + '/voice', data=b'\xff\xfe', headers=form)).status == 400
        assert (await http.post(base + '/voice', data='{"CallSid": "CA1"}', headers={'Content-Type': 'application/json'})).status == 400
        assert (await http.post(base + '/voice', data=b'a=1&&=%zz', headers=form)).status == 400
        async def slow():
            yield b'CallSid='
            await asyncio.sleep(2)
            yield b'CA1'
        assert (await http.post(base + '/voice', data=slow(), headers=form)).status == 408
    assert app[STATS]['bad_requests'] == 5


async def test_a_call_sid_that_is_a_path_is_refused_without_a_token(aiohttp_server, tmp_path):
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3', record_calls=True, recordings_dir=str(tmp_path / 'rec')),
                     providers=fakes())
    server = await aiohttp_server(app)
    base = str(server.make_url('')).rstrip('/')
    async with aiohttp.ClientSession() as http:
        r = await http.post(base + '/voice', data=voice_params('../../evil', 'AC1'))
        assert r.status == 400
        ws = await http.ws_connect(base.replace('http', 'ws') + '/voice-stream')
        await ws.send_str(json.dumps({'event': 'start', 'streamSid': 'MZ1', 'start': {'callSid': '../../evil', 'customParameters': {}}}))
        msg = await ws.receive()
        assert (msg.data, msg.extra) == (1008, 'not a call sid')
    assert not list(tmp_path.rglob('evil*'))


async def test_finished_calls_keep_no_audio(hotline):
    app, base = await hotline(record_calls=True)
    stream = await call_on(base)
    await stream.wait_reply(0, 10, 0.3, 20)
    await stream.stop(); await asyncio.sleep(0.5)
    (call,) = app[FINISHED]
    assert call.recorder is None and call.turn_taker is None and call.bot.playout.recorder is None
    assert list((Path(app[SETTINGS].recordings_dir)).glob('*.wav'))  # the audio went to its file


class LeakyModel(LanguageModel):
    "A model whose error quotes the key, as some providers' do."
    name = 'leaky'
    async def reply(self, messages, usage=None):
        raise ProviderError('openai: HTTP 401: Incorrect API key provided: sk-live-0123456789abcdef')
        yield


async def test_provider_errors_are_stored_without_secrets(hotline):
    app, base = await hotline(providers=fakes(llm=LeakyModel()), openai_api_key='sk-live-0123456789abcdef')
    stream = await call_on(base)
    await stream.wait_reply(0, 5, 0.3, 10)
    t = await stream.say(np.r_[voiced(0.8), np.zeros(6400, np.int16)])
    await stream.wait_reply(t, 5, 0.3, 10)
    await stream.stop(); await asyncio.sleep(0.5)
    await app[SINK].flush()
    stored = json.dumps(await app[STORE].get_call(stream.call_sid), default=str)
    assert 'Incorrect API key provided: [redacted]' in stored and 'sk-live' not in stored
