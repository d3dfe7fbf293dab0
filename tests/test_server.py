"The server over real HTTP and WebSockets, driven by the Twilio simulator, with fake engines."
import asyncio, json
import pytest
from aiohttp import WSServerHandshakeError
from twilio.request_validator import RequestValidator

from artist_hotline.providers import CannedLLM, EchoSTT, Providers, ToneTTS
from artist_hotline.server import create_app, drain, FINISHED, CALLS, STATS
from artist_hotline.settings import CallSettings, Settings
from conftest import voiced, wait_health
from artist_hotline.simulate import Hangup, Step, dial, simulate_call, twilio_signature

TOKEN = 'test-auth-token'
FORM = {'CallSid': 'CA0001', 'AccountSid': 'AC0001', 'From': '+15551230000', 'To': '+15550000000', 'CallStatus': 'ringing'}


def fakes(texts=('hello there', 'tell me more'), reply='Nice to hear you. What do you make?'):
    return Providers(EchoSTT(list(texts)), CannedLLM(reply), ToneTTS())


@pytest.fixture
async def hotline(aiohttp_server):
    "Start a hotline server on 127.0.0.1; returns (server, app, base URL)."
    async def start(providers=None, **settings):
        app = create_app(Settings(**settings), providers=providers or fakes())
        server = await aiohttp_server(app)
        return server, app, str(server.make_url('')).rstrip('/')
    return start


async def test_webhook_and_callbacks_signatures(hotline, aiohttp_client):
    server, app, base = await hotline(twilio_auth_token=TOKEN)
    client = await aiohttp_client(server)
    good = RequestValidator(TOKEN).compute_signature(f'{base}/voice', FORM)
    r = await client.post('/voice', data=FORM, headers={'X-Twilio-Signature': good})
    assert r.status == 200 and '<Connect><Stream' in await r.text()
    for headers in ({'X-Twilio-Signature': 'AAAA'}, {}):
        r = await client.post('/voice', data=FORM, headers=headers)
        assert r.status == 403 and await r.text() == ''
    tampered = dict(FORM, From='+19999999999')
    assert (await client.post('/voice', data=tampered, headers={'X-Twilio-Signature': good})).status == 403
    status = {'CallSid': 'CA0001', 'StreamSid': 'MZ1', 'StreamEvent': 'stream-started'}
    for path in ('/stream-status', '/call-status'):
        sig = RequestValidator(TOKEN).compute_signature(f'{base}{path}', status)
        assert (await client.post(path, data=status, headers={'X-Twilio-Signature': sig})).status == 204
        assert (await client.post(path, data=status, headers={'X-Twilio-Signature': 'bad'})).status == 403


async def test_public_url_and_forwarded_host_are_what_is_signed(hotline, aiohttp_client):
    server, app, base = await hotline(twilio_auth_token=TOKEN)
    client = await aiohttp_client(server)
    sig = RequestValidator(TOKEN).compute_signature('https://hotline.example.org/voice', FORM)
    r = await client.post('/voice', data=FORM, headers={'X-Twilio-Signature': sig, 'X-Forwarded-Proto': 'https',
                                                        'X-Forwarded-Host': 'hotline.example.org'})
    assert r.status == 200 and 'url="wss://hotline.example.org/voice-stream"' in await r.text()
    server2, _, _ = await hotline(twilio_auth_token=TOKEN, public_url='https://calls.example.com')
    client2 = await aiohttp_client(server2)
    sig = RequestValidator(TOKEN).compute_signature('https://calls.example.com/voice', FORM)
    r = await client2.post('/voice', data=FORM, headers={'X-Twilio-Signature': sig})
    assert r.status == 200 and 'url="wss://calls.example.com/voice-stream"' in await r.text()


async def test_socket_handshake_signature(hotline, aiohttp_client):
    server, app, base = await hotline(twilio_auth_token=TOKEN)
    client = await aiohttp_client(server)
    url = base.replace('http://', 'ws://') + '/voice-stream'
    ok = await client.ws_connect('/voice-stream', headers={'x-twilio-signature': twilio_signature(TOKEN, url, {})})
    await ok.close()
    https_form = twilio_signature(TOKEN, base + '/voice-stream', {})  # signed over http://, not ws://
    for headers in ({'x-twilio-signature': https_form}, {'x-twilio-signature': 'nope'}, {}):
        with pytest.raises(WSServerHandshakeError) as e: await client.ws_connect('/voice-stream', headers=headers)
        assert e.value.status == 403


async def test_unsigned_only_from_trusted_networks(hotline, aiohttp_client):
    server, _, _ = await hotline()  # no auth token: loopback is trusted
    client = await aiohttp_client(server)
    assert (await client.post('/voice', data=FORM)).status == 200
    h = await (await client.get('/health')).json()
    assert 'NOT CHECKED' in h['signatures']
    server2, _, _ = await hotline(trusted_networks='10.0.0.0/8')
    client2 = await aiohttp_client(server2)
    assert (await client2.post('/voice', data=FORM)).status == 403
    with pytest.raises(WSServerHandshakeError): await client2.ws_connect('/voice-stream')


async def test_stream_token_must_match(hotline):
    server, app, base = await hotline(twilio_auth_token=TOKEN)
    stream = await dial(base, TOKEN, speed=0, start=False)
    stream.twiml.parameters['token'] = 'forged'
    await stream.send_connected(); await stream.send_start()
    with pytest.raises(Hangup):
        for _ in range(100): await stream.fill(0.02)
    await stream.close()
    assert not app[CALLS] and app[STATS]['calls'] == 0 and app[STATS]['forbidden'] == 1


async def test_conversation_two_turns_greeting_once(hotline):
    providers = fakes()
    server, app, base = await hotline(providers, twilio_auth_token=TOKEN)
    script = [Step(pcm=voiced(0.9), pause_s=0.3), Step(pcm=voiced(0.7, 1), pause_s=0.3)]
    result = await simulate_call(base, script, auth_token=TOKEN, speed=0)
    await asyncio.sleep(0.1)
    call = app[FINISHED][-1]
    assert [t.kind for t in call.turns] == ['greeting', 'reply', 'reply']
    assert [t.caller_text for t in call.turns[1:]] == ['hello there', 'tell me more']
    second = providers.llm.prompts[1]
    assert [m['role'] for m in second] == ['system', 'assistant', 'user', 'assistant', 'user']
    assert second[3]['content'] == 'Nice to hear you. What do you make?'
    assert result.greeting_s is not None and all(t.latency_s is not None for t in result.turns)
    assert result.errors == [] and result.ended_by == 'caller'
    assert result.custom_parameters['caller'] == '+15005550006' and call.record.caller == '+15005550006'


async def test_malformed_flood_leaves_call_working(hotline):
    server, app, base = await hotline(twilio_auth_token=TOKEN)
    stream = await dial(base, TOKEN, speed=0)
    garbage = ['{', '[]', 'null', '{"event":"media"}', '{"event":"media","streamSid":"MZ1","media":{"payload":"!!"}}',
               '{"event":"media","streamSid":"' + stream.stream_sid + '","media":{"payload":"@@@"}}',
               '{"event":"teleport","streamSid":"x"}', b'\x00\x01binary', 'x' * 70000, '{"event":"mark","streamSid":5}']
    for i in range(300): await stream.send_raw(garbage[i % len(garbage)])
    await stream.wait_reply(0, 10, 0.3, 30)  # the greeting still plays
    t = await stream.say(voiced(0.8))
    heard = await stream.wait_sound(t + 6400, 10)
    await stream.stop(); await stream.close()
    await asyncio.sleep(0.1)
    assert heard is not None
    call = app[FINISHED][-1]
    assert [t.kind for t in call.turns] == ['greeting', 'reply']
    assert call.events[0][1] == 'setup' and call.events[0][2]['engines']['llm'] == 'canned'  # what the call ran with, first
    assert app[STATS]['malformed'] == 300
    assert sum(k == 'malformed' for _, k, _ in call.events) == 10  # recorded, but not 300 times


async def test_idle_reprompt_then_hangup(hotline):
    server, app, base = await hotline(call=CallSettings(idle_reprompt_s=0.6, idle_hangup_s=1.6))
    stream = await dial(base, speed=0)
    with pytest.raises(Hangup):
        for _ in range(400): await stream.fill(0.02, waiting=True)
    await stream.close()
    await asyncio.sleep(0.1)
    call = app[FINISHED][-1]
    assert [t.kind for t in call.turns] == ['greeting', 'reprompt', 'goodbye']
    assert call.record.end_reason == 'caller silent' and stream.ended_by == 'server'


async def test_shutdown_with_call_open_says_goodbye(hotline):
    server, app, base = await hotline()
    stream = await dial(base, speed=0)
    await stream.wait_reply(0, 10, 0.3, 30)
    call = next(iter(app[CALLS].values()))
    heard_before = len(stream.playback.audio)
    line = asyncio.create_task(stream.fill(30.0, waiting=True))  # the caller stays on the line
    await server.close()  # on_shutdown: drain
    with pytest.raises(Hangup): await asyncio.wait_for(line, 20)
    await stream.close()
    assert call.turns[-1].kind == 'goodbye' and call.record.end_reason == 'server shutting down'
    assert call.ended.is_set() and stream.ended_by == 'server'
    assert len(stream.playback.audio) > heard_before  # the caller heard the goodbye


async def test_shutdown_mid_line_cuts_it_and_the_goodbye_is_heard_and_stored(hotline, tmp_path):
    from artist_hotline.store import Store
    db = f'sqlite:///{tmp_path}/calls.sqlite3'
    server, app, base = await hotline(database_url=db, call=CallSettings(idle_reprompt_s=1.0, idle_hangup_s=30))
    stream = await dial(base, speed=1)
    await stream.wait_reply(0, 10, 0.3, 30)
    call = next(iter(app[CALLS].values()))
    line = asyncio.create_task(stream.fill(30.0, waiting=True))
    for _ in range(200):  # the reprompt has begun
        if any(k == 'reprompt' for _, k, _ in call.events): break
        await asyncio.sleep(0.01)
    await drain(app)  # as `serve` does on SIGTERM: before aiohttp's shutdown stops reading the socket
    await server.close()
    await asyncio.gather(line, return_exceptions=True); await stream.close()
    kinds = [(t.kind, t.outcome) for t in call.turns]
    assert kinds == [('greeting', 'replied'), ('reprompt', 'cut_off'), ('goodbye', 'replied')], kinds
    assert call.turns[-1].heard_text == call.turns[-1].reply_text  # the goodbye played whole, and its marks came back
    events = [k for _, k, _ in call.events]
    assert 'reprompt' not in events[events.index('cut_off'):]
    async with Store(db) as store:
        kept = await store.get_call(call.sid)
    assert kept['turns'][-1]['heard_text'] == call.turns[-1].reply_text


def test_serve_runs_on_uvloop_and_freezes_start_up(tmp_path):
    "`artist-hotline serve` as production runs it: up, healthy, on uvloop, start-up frozen; stops cleanly on SIGINT."
    import os, signal, socket, subprocess, sys, time, urllib.request
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    env = dict(os.environ, HOST='127.0.0.1', PORT=str(port), DATABASE_URL=f'sqlite:///{tmp_path}/calls.sqlite3')
    code = ('import gc, artist_hotline.server as s; from aiohttp import web\n'
            'app = s.create_app(s.Settings.from_env())\n'
            'async def frozen(request): return web.json_response(gc.get_freeze_count())\n'
            'app.router.add_get("/frozen", frozen)\n'
            's.serve(s.Settings.from_env(), app)')
    proc = subprocess.Popen([sys.executable, '-c', code], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        health = wait_health(port, proc)
        assert health['status'] == 'ok' and health['event_loop'] == 'uvloop'
        assert json.loads(urllib.request.urlopen(f'http://127.0.0.1:{port}/frozen', timeout=2).read()) > 10_000
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


async def test_a_cloud_that_cannot_work_is_reported_at_start(aiohttp_client, tmp_path):
    "A key without a voice, or an unreachable base URL: /health says degraded and why, and speech stays offline."
    db = f'sqlite:///{tmp_path}/calls.sqlite3'
    app = create_app(Settings(elevenlabs_api_key='xi-key', openai_api_key='sk-key', openai_base_url='http://127.0.0.1:9/v1',
                              llm_provider='openai', stt_provider='pocketsphinx', database_url=db))
    client = await aiohttp_client(app)
    h = await (await client.get('/health')).json()
    assert h['status'] == 'degraded' and h['providers']['tts'] == 'piper/en_US-joe-medium' and h['providers']['llm'] == 'openai:gpt-4o-mini'
    assert any('no voice id' in p for p in h['problems']) and any('127.0.0.1:9' in p and 'unreachable' in p for p in h['problems'])
    assert any('speech falls back to piper/en_US-joe-medium' in p for p in h['problems'])


async def test_working_cloud_is_ok_and_an_unknown_voice_is_not(aiohttp_client, tmp_path):
    from artist_hotline.fakecloud import Engines, running_fake_cloud
    from artist_hotline.offline import ScriptedBrain, espeak_synth
    from artist_hotline.persona import load_persona
    async with running_fake_cloud('instant', engines=Engines(EchoSTT(), ScriptedBrain(load_persona()), espeak_synth)) as fc:
        kw = dict(openai_api_key='sk', openai_base_url=fc.openai_base_url, elevenlabs_api_key='xi', elevenlabs_base_url=fc.elevenlabs_base_url,
                  database_url=f'sqlite:///{tmp_path}/calls.sqlite3')
        fc.voices.only({'voice-1'})
        good = await aiohttp_client(create_app(Settings(**kw, elevenlabs_voice_id='voice-1')))
        h = await (await good.get('/health')).json()
        assert (h['status'], h['problems'], h['providers']['tts']) == ('ok', [], 'elevenlabs:eleven_flash_v2_5')
        bad = await aiohttp_client(create_app(Settings(**kw | dict(database_url=f'sqlite:///{tmp_path}/b.sqlite3'), elevenlabs_voice_id='gone')))
        h = await (await bad.get('/health')).json()
        assert h['status'] == 'degraded' and h['problems'] == [
            f'elevenlabs: HTTP 404 from {fc.elevenlabs_base_url}/v1/voices/gone: A voice with voice_id gone was not found.']


def test_the_server_loads_what_a_call_needs_before_any_call():
    "numpy loads numpy.fft lazily, on a call's first voiced frame; with no descriptor left that import failed and killed the call."
    import subprocess, sys
    code = "import sys, artist_hotline.server; assert 'numpy.fft' in sys.modules, 'numpy.fft not loaded'"
    subprocess.run([sys.executable, '-c', code], check=True)


async def test_without_a_token_a_local_proxy_relaying_an_outside_caller_is_refused(aiohttp_client, tmp_path):
    "No TWILIO_AUTH_TOKEN: only trusted networks are answered, and a proxy on loopback does not make an outside address trusted."
    client = await aiohttp_client(create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3'), providers=Providers(EchoSTT([]), CannedLLM(), ToneTTS())))
    form = {'CallSid': 'CA' + '1' * 32, 'From': '+15551112222'}
    ok = await client.post('/voice', data=form)
    relayed = await client.post('/voice', data=form | {'CallSid': 'CA' + '2' * 32}, headers={'X-Forwarded-For': '203.0.113.9'})
    assert ok.status == 200 and '<Connect>' in await ok.text()
    assert relayed.status == 403


async def test_a_body_cut_short_is_one_line_in_the_log(hotline, caplog):
    server, app, base = await hotline()
    for _ in range(3):
        r, w = await asyncio.open_connection(server.host, server.port)
        w.write(b'POST /voice HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\nCallSid=CA')
        await w.drain(); w.close()
    for _ in range(100):
        if app[STATS]['bad_requests'] == 3: break
        await asyncio.sleep(0.02)
    cut = [r for r in caplog.records if 'cut short' in r.getMessage()]
    assert len(cut) == 3 and not any(r.exc_info for r in caplog.records), [r.getMessage() for r in caplog.records]
