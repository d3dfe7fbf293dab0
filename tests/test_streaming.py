"""Streaming speech-to-text: the fake cloud's Realtime transcription checked against the SDK's own types, both clients,
faults, pocketsphinx's incremental decoding, and whole calls whose turns end on the words heard."""
import asyncio, base64, json

import aiohttp
import numpy as np
import pytest
from openai.types.realtime import RealtimeClientEventParam, RealtimeServerEvent
from pydantic import TypeAdapter

from artist_hotline.audio import read_audio, to_phone, ulaw_encode
from artist_hotline.fakecloud import FAULT_KINDS, Engines, running_fake_cloud
from artist_hotline.offline import ScriptedBrain, SphinxSTT, espeak_synth
from artist_hotline.persona import load_persona
from artist_hotline.providers import EchoSTT, ProviderError, ScriptedStreamSTT
from artist_hotline.realtime import HttpOpenAIRealtimeSTT, OpenAIRealtimeSTT, RealtimeTranscript, transcription_session
from artist_hotline.server import FINISHED, create_app
from artist_hotline.settings import CallSettings, Settings
from artist_hotline.simulate import Step, simulate_call
from conftest import voiced

CLIENTS = [HttpOpenAIRealtimeSTT, OpenAIRealtimeSTT]
server_events, client_events = TypeAdapter(RealtimeServerEvent), TypeAdapter(RealtimeClientEventParam)


def engines(texts=(), stt=None):
    return Engines(stt or EchoSTT(list(texts)), ScriptedBrain(load_persona()), espeak_synth)


async def raw_socket(cloud, http):
    return await http.ws_connect(cloud.openai_base_url.replace('http', 'ws') + '/realtime', params={'intent': 'transcription'},
                                 headers={'Authorization': 'Bearer k'})


async def test_fake_speaks_the_protocol_the_sdk_describes():
    async with running_fake_cloud('instant', engines=engines(['hello there'])) as cloud, aiohttp.ClientSession() as http:
        ws = await raw_socket(cloud, http)
        sent = [{'type': 'session.update', 'session': transcription_session('gpt-4o-transcribe')},
                {'type': 'input_audio_buffer.append', 'audio': base64.b64encode(b'\xff' * 2400).decode()},
                {'type': 'input_audio_buffer.commit'}]
        for ev in sent:
            client_events.validate_python(ev)
            await ws.send_json(ev)
        got = []
        while not got or got[-1]['type'] != 'conversation.item.input_audio_transcription.completed':
            got.append(json.loads((await ws.receive(timeout=5)).data))
        await ws.close()
    for ev in got: server_events.validate_python(ev)
    delta = 'conversation.item.input_audio_transcription.delta'
    assert [e['type'] for e in got] == ['session.created', 'session.updated', 'input_audio_buffer.committed', delta, delta,
                                        'conversation.item.input_audio_transcription.completed']  # a non-live model: words after the commit
    assert got[1]['session']['audio']['input']['format'] == {'type': 'audio/pcmu'} and got[1]['session']['audio']['input']['turn_detection'] is None
    assert {e['item_id'] for e in got[2:]} == {got[2]['item_id']} and got[-1]['transcript'] == 'hello there'
    assert ''.join(e['delta'] for e in got[3:5]) == 'hello there'
    (entry,) = cloud.journal['realtime']
    assert (entry['model'], entry['format'], entry['audio_s'], entry['turns'][0]['text']) == ('gpt-4o-transcribe', 'audio/pcmu', 0.3, 'hello there')


@pytest.mark.parametrize('event,code', [
    ({'type': 'session.update', 'session': {'type': 'realtime'}}, 'invalid_value'),
    ({'type': 'session.update', 'session': {'type': 'transcription', 'audio': {'input': {'format': {'type': 'audio/pcm', 'rate': 16000}}}}}, 'invalid_value'),
    ({'type': 'session.update', 'session': {'type': 'transcription', 'audio': {'input': {'transcription': {'model': 'x'}}}}}, 'unsupported_by_fake'),
    ({'type': 'input_audio_buffer.append', 'audio': 'not base64!'}, 'invalid_value'),
    ({'type': 'input_audio_buffer.commit'}, 'input_audio_buffer_commit_empty'),
    ({'type': 'response.create'}, 'invalid_value')])
async def test_fake_refuses_what_openai_would(event, code):
    async with running_fake_cloud('instant', engines=engines()) as cloud, aiohttp.ClientSession() as http:
        ws = await raw_socket(cloud, http)
        await ws.receive(timeout=5)  # session.created
        await ws.send_json(dict(event, event_id='mine'))
        err = json.loads((await ws.receive(timeout=5)).data)
        await ws.close()
    server_events.validate_python(err)
    assert err['type'] == 'error' and err['error']['code'] == code and err['error']['event_id'] == 'mine'


async def test_fake_wants_the_intent_and_a_key():
    async with running_fake_cloud('instant', engines=engines()) as cloud, aiohttp.ClientSession() as http:
        url = cloud.openai_base_url.replace('http', 'ws') + '/realtime'
        for params, headers, status in (({}, {'Authorization': 'Bearer k'}, 400), ({'intent': 'transcription'}, {}, 401)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as e: await http.ws_connect(url, params=params, headers=headers)
            assert e.value.status == status


async def stream_turn(stt, audio: bytes, pace=0.):
    heard = []
    stream = await stt.open(heard.append)
    for i in range(0, len(audio), 160):
        stream.send(audio[i:i + 160])
        if pace: await asyncio.sleep(pace)
    final = await asyncio.wait_for(stream.commit(), 120)  # only a hang fails: a busy machine decodes slowly
    await stream.close()
    return heard, final


@pytest.mark.parametrize('client', CLIENTS)
async def test_both_clients_stream_a_turn_and_get_its_words(client):
    stt = ScriptedStreamSTT(['go forward ten meters'], ms_per_word=200)
    async with running_fake_cloud('instant', engines=engines(stt=stt)) as cloud:
        rt = client(api_key='k', base_url=cloud.openai_base_url)
        heard, final = await stream_turn(rt, b'\xff' * 8000, pace=0.02)  # a second of audio, in real time
        await rt.aclose()
    assert final == 'go forward ten meters'
    assert heard[-1] == 'go forward ten meters' and len(heard) == 4  # one more word at a time, while the audio came
    assert cloud.journal.last('realtime')['live'] is True


async def test_non_live_models_send_their_words_after_the_commit():
    async with running_fake_cloud('instant', engines=engines(stt=ScriptedStreamSTT(['go forward ten meters'], ms_per_word=200))) as cloud:
        rt = HttpOpenAIRealtimeSTT(model='gpt-4o-mini-transcribe', api_key='k', base_url=cloud.openai_base_url)
        heard, final = await stream_turn(rt, b'\xff' * 8000, pace=0.02)
        await rt.aclose()
    assert (heard, final) == ([], 'go forward ten meters')


@pytest.mark.parametrize('client', CLIENTS)
@pytest.mark.parametrize('kind', FAULT_KINDS)
async def test_faults_fail_the_turn_or_leave_it_to_the_deadline(client, kind):
    async with running_fake_cloud('instant', engines=engines(['a', 'b'])) as cloud:
        rt = client(api_key='k', base_url=cloud.openai_base_url)
        stream = await rt.open(lambda w: None)
        cloud.faults.fail_next('realtime', kind)
        stream.send(b'\xff' * 1600)
        try: outcome = await asyncio.wait_for(stream.commit(), 1.)
        except ProviderError: outcome = 'ProviderError'
        except asyncio.TimeoutError: outcome = 'no answer'
        broken = bool(stream.broken)
        if not broken:  # the socket goes on: the next turn is transcribed
            stream.send(b'\xff' * 1600)
            assert await asyncio.wait_for(stream.commit(), 2.) in ('a', 'b')
        await stream.close()
        await rt.aclose()
    assert outcome == {'error': 'ProviderError', 'drop': 'ProviderError', 'hang': 'no answer', 'stall': 'no answer', 'malformed': 'no answer'}[kind]
    assert broken == (kind == 'drop')


@pytest.mark.parametrize('client', CLIENTS)
async def test_opening_fails_cleanly(client):
    rt = client(api_key='k', base_url='http://127.0.0.1:9/v1', timeout=1.)
    with pytest.raises(ProviderError): await rt.open(lambda w: None)
    await rt.aclose()
    with pytest.raises(ProviderError, match='no API key'): client()


async def test_the_protocol_keeps_a_committed_turns_words_out_of_the_next():
    sent, words = [], []
    async def send(ev): sent.append(ev)
    async def close(): pass
    rt = RealtimeTranscript(words.append, 'test', send, close)
    rt.handle({'type': 'session.updated'})
    rt.send(b'\xff' * 800)
    rt.handle({'type': 'conversation.item.input_audio_transcription.delta', 'item_id': 'i1', 'delta': 'one'})
    first = rt.commit()
    rt.handle({'type': 'conversation.item.input_audio_transcription.delta', 'item_id': 'i1', 'delta': ' two'})  # before its ack
    rt.handle({'type': 'input_audio_buffer.committed', 'item_id': 'i1'})
    rt.handle({'type': 'conversation.item.input_audio_transcription.delta', 'item_id': 'i1', 'delta': ' three'})  # after it
    rt.handle({'type': 'conversation.item.input_audio_transcription.delta', 'item_id': 'i2', 'delta': 'next'})
    rt.handle({'type': 'conversation.item.input_audio_transcription.completed', 'item_id': 'i1', 'transcript': 'one two three'})
    assert await first == 'one two three' and words == ['one', 'next']
    rt.handle({'type': 'conversation.item.input_audio_transcription.failed', 'item_id': 'i9', 'error': {'message': 'x'}})  # not ours: ignored
    rt.handle({'type': 'error', 'error': {'message': 'rate limited', 'event_id': None}})
    assert rt.errors == ['test: rate limited'] and not rt.broken
    await asyncio.sleep(0.01)
    for ev in sent: client_events.validate_python(ev)
    await rt.close()


@pytest.fixture(scope='module')
def sphinx():
    stt = SphinxSTT(workers=1, stream_decoders=1).load()
    yield stt
    stt.close()


async def test_pocketsphinx_streams_words_and_its_final_is_the_whole_turn(sphinx, corpus):
    pcm = to_phone(*read_audio(corpus / 'misc/goforward.raw'))
    heard, audio = [], ulaw_encode(pcm).tobytes()
    stream = await sphinx.open(heard.append)
    for i in range(0, len(audio), 160):  # in real time
        stream.send(audio[i:i + 160])
        await asyncio.sleep(0.02)
    for _ in range(12000):  # words while the turn goes on: on a busy machine the pieces wait their turn, so wait for them (a commit ends the hypotheses)
        if any(heard): break
        await asyncio.sleep(0.01)
    final = await asyncio.wait_for(stream.commit(), 120)
    await stream.close()
    assert final == await sphinx.transcribe(pcm)  # the same words as the whole turn transcribed
    assert len(heard) >= 2 and any(heard), heard  # hypotheses while it came (one per 100 ms piece on an idle machine)
    assert (await stream_turn(sphinx, ulaw_encode(pcm).tobytes(), pace=0.004))[1] == final  # the same final each time


async def test_pocketsphinx_gives_a_final_without_words_when_its_decoders_are_busy(sphinx, corpus):
    pcm = to_phone(*read_audio(corpus / 'misc/goforward.raw'))
    codes = ulaw_encode(pcm).tobytes()
    (h1, f1), (h2, f2) = await asyncio.gather(stream_turn(sphinx, codes, 0.004), stream_turn(sphinx, codes, 0.004))
    assert f1 == f2 == await sphinx.transcribe(pcm)
    assert not (any(h1) and any(h2))  # one stream decoder in the lane: only one turn had words on the way


# ---------------------------------------------------------------- whole calls
TOKEN = 'streaming-test-token'

@pytest.fixture
async def hotline(aiohttp_server):
    stack = []
    async def start(stt, **settings):
        ctx = running_fake_cloud(profile='instant', engines=engines(stt=stt))
        fc = await ctx.__aenter__(); stack.append(ctx)
        s = Settings(twilio_auth_token=TOKEN, openai_api_key='sk-test', openai_base_url=fc.openai_base_url, calls_ui_token='ui',
                     database_url='sqlite:///calls.sqlite3', **settings)
        app = create_app(s)
        server = await aiohttp_server(app)
        return fc, app, server
    yield start
    for ctx in reversed(stack): await ctx.__aexit__(None, None, None)


async def test_a_call_ends_turns_on_their_words_and_keeps_why(hotline):
    # it punctuates, as the realtime ear does; each turn's last word comes after its speech has ended, so its words are caught up
    stt = ScriptedStreamSTT(['tell me about your paintings.', 'and what about'], ms_per_word=320)
    fc, app, server = await hotline(stt, stt_commit_pauses=False)  # the scripted ear keeps one transcript a turn: one commit a turn
    base = str(server.make_url('')).rstrip('/')
    script = [Step(pcm=np.r_[np.zeros(8000, np.int16), voiced(0.8)], pause_s=1.0), Step(pcm=voiced(0.5, 1), pause_s=2.5)]
    await simulate_call(base, script, auth_token=TOKEN, speed=1)  # in real time: the words come on the call's clock, as on a phone line
    call = app[FINISHED][-1]
    first, second = call.turns[1], call.turns[2]
    assert first.end_reason.startswith('a complete sentence') and first.partial_text == first.caller_text == 'tell me about your paintings.'
    assert first.stt == 'openai-realtime:gpt-realtime-whisper' and first.stt_final is not None
    assert second.end_reason.startswith('"about" wanted more') and second.endpoint - second.speech_end > 1.0
    async with aiohttp.ClientSession(headers={'Authorization': 'Bearer ui'}) as http:
        async with http.get(f'{base}/calls/{call.sid}') as r: rec = await r.json()
    kept = rec['turns'][1]
    for k in ('speech_start', 'speech_end', 'endpoint', 'caller_text', 'end_reason', 'partial_text', 'stt_final'):
        assert kept[k] == pytest.approx(getattr(first, k), abs=1e-6) if isinstance(kept[k], float) else kept[k] == getattr(first, k), k
    assert kept['latency_ms']['stt'] < 5  # ms: answered on the words heard, at once


async def test_health_names_the_streaming_engine_and_streaming_can_be_off(hotline):
    fc, app, server = await hotline(ScriptedStreamSTT())
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url('/health')) as r: h = await r.json()
    assert h['providers']['stream_stt'] == 'openai-realtime:gpt-realtime-whisper' and h['providers']['stt'] == 'openai:gpt-4o-mini-transcribe'
    fc2, app2, server2 = await hotline(ScriptedStreamSTT(), stt_streaming=False)
    async with aiohttp.ClientSession() as http:
        async with http.get(server2.make_url('/health')) as r: h = await r.json()
    assert h['providers']['stream_stt'] == 'off'
