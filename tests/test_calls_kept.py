"""Every call kept, through the running server and the Twilio simulator: the store (SQLite and
PostgreSQL), memory across calls, recordings, the calls API and page, limits, SMS and REST hang-up."""
import asyncio, os
import numpy as np
import pytest
import soundfile as sf

from artist_hotline.insights import INSIGHTS_PROMPT
from artist_hotline.notify import TWILIO_SENT, fake_twilio_api
from artist_hotline.providers import CannedLLM, EchoSTT, Providers, ToneTTS
from artist_hotline.server import CALLS, FINISHED, SINK, STORE, WIND_UPS, create_app
from artist_hotline.settings import CallSettings, Settings
from conftest import voiced
from artist_hotline.simulate import Hangup, Step, dial, simulate_call
from test_callsweb import CHROMIUM, chromium

UI_TOKEN = 'calls-ui-token'


@pytest.fixture
async def hotline(aiohttp_server, db_url, tmp_path):  # noqa: F811
    "Start a hotline with fake engines on a fresh store; returns (app, base URL, llm)."
    async def start(texts=('i paint boats', 'and i live by the sea'), **settings):
        llm = CannedLLM('Boats are wonderful. Tell me more?')
        kw = dict(database_url=db_url, recordings_dir=str(tmp_path / 'rec'), calls_ui_token=UI_TOKEN) | settings
        app = create_app(Settings(**kw), providers=Providers(EchoSTT(list(texts) * 4), llm, ToneTTS()))
        server = await aiohttp_server(app)
        return app, str(server.make_url('')).rstrip('/'), llm
    return start


def last_reply_prompt(llm):
    "The system prompt of the last reply (not of a call summary)."
    return [p for p in llm.prompts if not p[0]['content'].startswith(('Summarise', INSIGHTS_PROMPT))][-1][0]['content']


async def settled(app):
    "Wait for the calls to be over and wound up (recording, summary, the end written) and the store's queue to land: the events, not a time."
    for _ in range(1000):
        if not app[CALLS] and not app[WIND_UPS]: break
        await asyncio.sleep(0.02)
    assert not app[CALLS] and not app[WIND_UPS] and await app[SINK].flush(10)


async def one_call(base, n=1, caller='+15551112222', **kw):
    return await simulate_call(base, [Step(pcm=voiced(0.8, i), pause_s=0.2) for i in range(n)], speed=0, from_=caller, **kw)


async def test_calls_are_stored_and_served(hotline):
    app, base, llm = await hotline(record_calls=True)
    sim = await one_call(base, 2)
    await settled(app)
    store = app[STORE]
    (row,) = await store.list_calls()
    assert row['sid'] == sim.call_sid and row['caller'] == '+15551112222' and row['ended_at'] is not None
    call = await store.get_call(sim.call_sid)
    kinds = [t['kind'] for t in call['turns']]
    assert kinds == ['notice', 'greeting', 'reply', 'reply']  # the recording notice comes first
    replies = [t for t in call['turns'] if t['kind'] == 'reply']
    assert [t['caller_text'] for t in replies] == ['i paint boats', 'and i live by the sea']
    assert all(t['outcome'] == 'replied' and t['first_sent'] > t['speech_end'] for t in replies)
    assert call['summary'] == 'Boats are wonderful. Tell me more?'  # written by the model, from the transcript:
    summarise = next(p for p in llm.prompts if p[0]['content'].startswith('Summarise'))
    assert 'i paint boats' in summarise[-1]['content']
    # the recording: stereo, 8 kHz, caller left and bot right
    x, sr = sf.read(call['recording'], dtype='int16')
    assert sr == 8000 and x.shape[1] == 2 and np.abs(x[:, 0]).max() > 1000 and np.abs(x[:, 1]).max() > 1000
    assert abs(len(x) / 8000 - sim.duration_s) < 0.5


async def test_calls_api_needs_the_token(hotline):
    import aiohttp
    app, base, _ = await hotline(record_calls=True)
    sim = await one_call(base)
    await settled(app)
    auth = {'Authorization': f'Bearer {UI_TOKEN}'}
    async with aiohttp.ClientSession() as http:
        assert (await http.get(f'{base}/calls')).status == 401
        listing = await (await http.get(f'{base}/calls', headers=auth)).json()
        assert [c['sid'] for c in listing['calls']] == [sim.call_sid]
        detail = await (await http.get(f'{base}/calls/{sim.call_sid}', headers=auth)).json()
        assert [t['kind'] for t in detail['turns']][-1] == 'reply' and detail['events'] is not None
        wav = await http.get(f'{base}/calls/{sim.call_sid}/recording.wav', headers={'Authorization': f'Bearer {UI_TOKEN}'})
        assert wav.status == 200 and (await wav.read())[:4] == b'RIFF'


async def test_calls_ui_closed_without_a_token(hotline):
    import aiohttp
    app, base, _ = await hotline(calls_ui_token='')
    async with aiohttp.ClientSession() as http:
        for path in ('/calls', '/calls/ui', '/calls/CA1'):
            assert (await http.get(base + path, headers={'Authorization': 'Bearer '})).status == 404


async def test_returning_caller_is_remembered(hotline):
    app, base, llm = await hotline()
    await one_call(base, 1, caller='+15553334444')
    await settled(app)
    await one_call(base, 1, caller='+15553334444')
    system = last_reply_prompt(llm)
    assert 'You spoke with this caller before' in system and 'boats' in system.lower()
    await one_call(base, 1, caller='+15559990000')  # someone else: no memory of the first caller
    assert 'spoke with this caller before' not in last_reply_prompt(llm)


async def test_memory_across_calls_can_be_switched_off(hotline):
    app, base, llm = await hotline(memory_chars=0)
    await one_call(base, 1, caller='+15553334444')
    await settled(app)
    await one_call(base, 1, caller='+15553334444')
    assert 'spoke with this caller before' not in last_reply_prompt(llm)


async def test_hourly_limit_refuses_with_busy_message(hotline):
    import aiohttp
    app, base, _ = await hotline(calls_per_hour=1)
    await one_call(base, 1, caller='+15557770000')
    form = {'CallSid': 'CA999', 'From': '+15557770000', 'To': '+1555', 'CallStatus': 'ringing'}
    async with aiohttp.ClientSession() as http:
        twiml = await (await http.post(f'{base}/voice', data=form)).text()
    assert '<Say>' in twiml and '<Hangup />' in twiml and '<Connect>' not in twiml
    (refusal,) = await app[STORE].refusals()
    assert refusal['caller'] == '+15557770000' and 'hour' in refusal['reason']
    other = await one_call(base, 1, caller='+15550001111')  # other callers still get through
    assert other.turns and other.turns[0].latency_s is not None


async def test_cap_on_open_calls(hotline):
    import aiohttp
    app, base, _ = await hotline(max_open_calls=1)
    stream = await dial(base, speed=0, from_='+15551230001')
    async with aiohttp.ClientSession() as http:
        twiml = await (await http.post(f'{base}/voice', data={'CallSid': 'CA2', 'From': '+15551230002'})).text()
    assert '<Hangup />' in twiml
    await stream.stop(); await stream.close()
    await settled(app)
    async with aiohttp.ClientSession() as http:
        twiml = await (await http.post(f'{base}/voice', data={'CallSid': 'CA3', 'From': '+15551230002'})).text()
    assert '<Connect>' in twiml  # the first call ended: room again


@pytest.fixture
async def twilio_rest(aiohttp_server):
    server = await aiohttp_server(fake_twilio_api('AC' + '1' * 32, 'rest-token'))
    return server.app, str(server.make_url('')).rstrip('/')


async def test_sms_summary_at_call_end(hotline, twilio_rest):
    rest, api = twilio_rest
    app, base, _ = await hotline(notify_sms_to='+15550009999', notify_sms_from='+15550000001', twilio_account_sid='AC' + '1' * 32,
                                 twilio_auth_token='rest-token', twilio_api_base=api)
    sim = await one_call(base, 1, auth_token='rest-token')
    sent = lambda: [m for m in rest[TWILIO_SENT] if m.get('To') == '+15550009999']
    for _ in range(600):  # the text goes out once the call's end is written: wait for it, not for a time
        if sent(): break
        await asyncio.sleep(0.05)
    (sms,) = sent()
    assert '+15551112222' in sms['Body'] and 'boats' in sms['Body'].lower()
    assert sim.turns[0].latency_s is not None


async def test_sms_failure_is_recorded_and_harmless(hotline, twilio_rest):
    rest, api = twilio_rest
    app, base, _ = await hotline(notify_sms_to='+15550009999', notify_sms_from='+15550000001', twilio_account_sid='AC' + '2' * 32,
                                 twilio_auth_token='rest-token', twilio_api_base=api)  # an account the API does not know
    sim = await one_call(base, 1, auth_token='rest-token')
    for _ in range(600):  # the failure is recorded once the call's end is written: wait for it, not for a time
        call = await app[STORE].get_call(sim.call_sid)
        if call and any(e['kind'] == 'sms_failed' for e in call['events']) and call['ended_at'] is not None: break
        await asyncio.sleep(0.05)
    assert any(e['kind'] == 'sms_failed' for e in call['events']) and call['ended_at'] is not None
    assert sim.turns[0].latency_s is not None


async def test_rest_hangup_when_credentials_exist(hotline, twilio_rest):
    rest, api = twilio_rest
    app, base, _ = await hotline(twilio_account_sid='AC' + '1' * 32, twilio_auth_token='rest-token', twilio_api_base=api,
                                 call=CallSettings(idle_reprompt_s=0.4, idle_hangup_s=1.0))
    stream = await dial(base, 'rest-token', speed=0)
    with pytest.raises(Hangup):
        for _ in range(500): await stream.fill(0.02, waiting=True)
    await stream.close()
    await settled(app)
    (update,) = [m for m in rest[TWILIO_SENT] if m.get('Status') == 'completed']
    assert update.get('CallSid', stream.call_sid) == stream.call_sid
    assert app[FINISHED][-1].record.end_reason == 'caller silent'


async def test_calls_page_in_chromium_lists_a_simulated_call(browser, hotline):
    app, base, _ = await hotline(record_calls=True)
    sim = await one_call(base, 2)
    await settled(app)
    dom = await chromium(f'{base}/calls/ui?token={UI_TOKEN}', '--dump-dom')
    assert sim.call_sid in dom and 'i paint boats' in dom
    assert f'/calls/{sim.call_sid}/recording.wav"' in dom.replace('&amp;', '&')


async def test_engines_that_carry_few_calls_cap_open_calls(aiohttp_server, db_url, tmp_path):
    "Offline Whisper says how many calls it carries (`calls_at_once`); the caller beyond hears the busy message, not silence."
    import aiohttp
    stt = EchoSTT(['hello'] * 4)
    stt.calls_at_once = 1  # as offline Whisper does, from WHISPER_CALLS_PER_CORE
    app = create_app(Settings(database_url=db_url, recordings_dir=str(tmp_path / 'rec'), calls_ui_token=UI_TOKEN),
                     providers=Providers(stt, CannedLLM('Hello.'), ToneTTS()))
    base = str((await aiohttp_server(app)).make_url('')).rstrip('/')
    stream = await dial(base, speed=0, from_='+15551230001')
    async with aiohttp.ClientSession() as http:
        twiml = await (await http.post(f'{base}/voice', data={'CallSid': 'CA2', 'From': '+15551230002'})).text()
        health = await (await http.get(f'{base}/health')).json()
    assert '<Say>' in twiml and '<Hangup />' in twiml and '<Connect>' not in twiml
    assert health['max_open_calls'] == 1
    (refusal,) = await app[STORE].refusals()
    assert refusal['reason'] == 'too many open calls'
    await stream.stop(); await stream.close()
