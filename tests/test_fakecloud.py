"The fake OpenAI + ElevenLabs server, driven by the official SDKs exactly as the hotline drives the real services."
import asyncio, json, socket, subprocess, sys, time
import aiohttp
import numpy as np
import pytest
import openai
from openai import AsyncOpenAI
from elevenlabs import VoiceSettings
from elevenlabs.client import AsyncElevenLabs
from elevenlabs.core.api_error import ApiError

from artist_hotline.audio import read_audio, to_phone, ulaw_decode, wav_bytes
from artist_hotline.fakecloud import (FAULT_KINDS, PROFILES, Engines, Faults, Journal, create_fake_cloud, default_engines, encode_audio,
                                      get_profile, running_fake_cloud)
from artist_hotline.persona import load_persona


@pytest.fixture(scope='module')
def engines():
    "One set of offline engines (pocketsphinx loads once) shared by every fake server in this module."
    return default_engines()


@pytest.fixture
async def cloud(engines):
    async with running_fake_cloud('instant', engines=engines) as c: yield c


@pytest.fixture
async def oa(cloud):
    c = AsyncOpenAI(api_key='fake', base_url=cloud.openai_base_url, max_retries=0, timeout=60)  # a loaded machine decodes slowly
    yield c
    await c.close()


@pytest.fixture
def el(cloud): return AsyncElevenLabs(api_key='fake', base_url=cloud.elevenlabs_base_url)


def upload(pcm, sr, name='turn.wav'): return (name, wav_bytes(pcm, sr), 'audio/wav')


async def chat_stream(oa, messages, **kw):
    stream = await oa.chat.completions.create(model='gpt-4o-mini', messages=messages, stream=True,
                                              stream_options={'include_usage': True}, **kw)
    return [c async for c in stream]


def text_of(chunks): return ''.join(c.choices[0].delta.content or '' for c in chunks if c.choices)


# ---- profiles, faults, journal (no server) ----

def test_profiles_named_and_settable():
    typical, slow = PROFILES['typical'], PROFILES['slow']
    assert (typical.stt_s, typical.first_token_s, typical.tokens_per_s, typical.first_audio_s, typical.speed) == (0.35, 0.4, 50, 0.25, 2)
    for a, b in [(slow.stt_s, typical.stt_s), (slow.first_token_s, typical.first_token_s), (slow.first_audio_s, typical.first_audio_s),
                 (typical.tokens_per_s, slow.tokens_per_s), (typical.speed, slow.speed)]:
        assert 2 <= a / b <= 3
    assert set(get_profile('instant').token_times(5)) == {0.}
    p = get_profile('typical', first_token_s=1., chunk_ms=50)
    assert p.token_times(2) == [1., 1.02] and len(p.audio_times(1.)) == 20
    assert PROFILES['typical'].first_token_s == 0.4  # the named profile is untouched
    with pytest.raises(ValueError, match='instant'): get_profile('nope')


def test_faults_are_seeded_and_scriptable():
    a, b = Faults(error=.1, hang=.1, stall=.1, drop=.1, malformed=.1, seed=7), Faults(error=.1, hang=.1, stall=.1, drop=.1, malformed=.1, seed=7)
    draws = [a.pick('chat') for _ in range(500)]
    assert draws == [b.pick('chat') for _ in range(500)]
    assert all(40 <= draws.count(k) <= 60 for k in FAULT_KINDS)
    f = Faults(error=1., endpoints=['stt']).fail_next('chat', 'drop', n=2)
    assert [f.pick('chat'), f.pick('chat'), f.pick('chat'), f.pick('stt'), f.pick('tts')] == ['drop', 'drop', None, 'error', None]
    assert f.injected == [('chat', 'drop'), ('chat', 'drop'), ('stt', 'error')]
    f.clear()
    assert f.pick('stt') is None
    with pytest.raises(ValueError): Faults(endpoints=['nope'])
    with pytest.raises(ValueError): Faults().fail_next('chat', 'explode')


def test_journal_keeps_newest():
    j = Journal(maxlen=2)
    for i in range(3): j.add('tts', i=i)
    assert [e['i'] for e in j['tts']] == [1, 2] and j.last('tts')['i'] == 2 and j.count('chat') == 0


@pytest.mark.parametrize('fmt,rate,width', [('ulaw_8000', 8000, 1), ('alaw_8000', 8000, 1), ('pcm_8000', 8000, 2),
                                            ('pcm_16000', 16000, 2), ('pcm_22050', 22050, 2), ('pcm_24000', 24000, 2),
                                            ('pcm_44100', 44100, 2)])
def test_encode_audio_raw_formats_are_headerless(fmt, rate, width):
    x = (5000 * np.sin(np.arange(22050) / 7)).astype(np.int16)
    audio, _ = encode_audio(x, 22050, fmt)
    assert audio[:4] != b'RIFF' and abs(len(audio) - rate * width) <= 2 * width


def test_encode_audio_containers():
    x = (5000 * np.sin(np.arange(22050) / 7)).astype(np.int16)
    assert encode_audio(x, 22050, 'wav_16000')[0][:4] == b'RIFF'
    assert encode_audio(x, 22050, 'opus_48000_64')[0][:4] == b'OggS'
    assert encode_audio(x, 22050, 'flac_24000')[0][:4] == b'fLaC'
    mp3, ctype = encode_audio(x, 22050, 'mp3_44100_128')
    assert ctype == 'audio/mpeg' and (mp3[:3] == b'ID3' or mp3[0] == 0xFF)
    for bad in ('aac_44100', 'ulaw_16000', 'pcm', 'opus_24000_32'):
        with pytest.raises(ValueError): encode_audio(x, 22050, bad)


# ---- speech-to-text through the OpenAI SDK ----

async def test_transcribes_real_speech_from_the_corpus(corpus, cloud, oa):
    x, sr = read_audio(corpus / 'misc/goforward.raw')
    t = await oa.audio.transcriptions.create(model='whisper-1', file=upload(x, sr), language='en')
    assert t.text == 'go forward ten meters'
    jfk, sr = read_audio(corpus / 'misc/jfk.wav', sr=8000)
    t = await oa.audio.transcriptions.create(model='gpt-4o-mini-transcribe', file=upload(jfk, sr), language='en')
    words = set(t.text.split())
    assert len(words & {'and', 'so', 'my', 'fellow', 'ask', 'not', 'what', 'your', 'country', 'can', 'do', 'for', 'you'}) >= 4, t.text
    sent = cloud.journal.last('stt')
    assert (sent['model'], sent['language'], sent['filename'], sent['sample_rate']) == ('gpt-4o-mini-transcribe', 'en', 'turn.wav', 8000)
    assert abs(sent['audio_s'] - 11.0) < 0.1


async def test_transcribes_espeak_speech_in_every_format(engines, cloud, oa):
    "pocketsphinx hears eSpeak poorly (and not always the same way): what matters is that each format carries the transcript."
    pcm, sr = engines.synth('hello what is your favourite colour')
    wav = upload(to_phone(pcm, sr), 8000)
    heard = lambda: cloud.journal.last('stt')['text']
    j = await oa.audio.transcriptions.create(model='gpt-4o-mini-transcribe', file=wav)
    assert j.text == heard() and j.usage.seconds == np.ceil(cloud.journal.last('stt')['audio_s'])
    assert (await oa.audio.transcriptions.create(model='whisper-1', file=wav, response_format='text')) == heard() + '\n'
    v = await oa.audio.transcriptions.create(model='whisper-1', file=wav, response_format='verbose_json')
    assert v.text == heard() and abs(v.duration - len(wav[1][44:]) / 16000) < 0.01 and v.segments[0].end == v.duration
    srt = await oa.audio.transcriptions.create(model='whisper-1', file=wav, response_format='srt')
    assert srt.startswith('1\n00:00:00,000 --> 00:00:0') and heard() in srt
    vtt = await oa.audio.transcriptions.create(model='whisper-1', file=wav, response_format='vtt')
    assert vtt.startswith('WEBVTT\n\n00:00:00.000 --> ') and heard() in vtt
    events = [e async for e in await oa.audio.transcriptions.create(model='gpt-4o-mini-transcribe', file=wav, stream=True)]
    assert [e.type for e in events] == ['transcript.text.delta'] * (len(events) - 1) + ['transcript.text.done']
    assert ''.join(e.delta for e in events[:-1]) == events[-1].text == heard() and events[-1].usage.output_tokens == len(events) - 1
    w = await oa.audio.transcriptions.create(model='whisper-1', file=wav, stream=True)  # whisper-1 ignores stream
    assert cloud.journal.last('stt')['stream'] is True and not hasattr(w, 'text') or w.text == heard()


async def test_transcription_rejects_what_openai_rejects(cloud, oa):
    with pytest.raises(openai.BadRequestError, match='Invalid file format'):
        await oa.audio.transcriptions.create(model='whisper-1', file=('turn.ulaw', b'\xff' * 8000, 'audio/basic'))
    with pytest.raises(openai.BadRequestError, match='Invalid file format'):
        await oa.audio.transcriptions.create(model='whisper-1', file=('turn.wav', b'\xff' * 8000, 'audio/wav'))
    with pytest.raises(openai.BadRequestError, match='too short') as e:
        await oa.audio.transcriptions.create(model='whisper-1', file=upload(np.zeros(400, np.int16), 8000))
    assert e.value.code == 'audio_too_short'
    with pytest.raises(openai.BadRequestError, match='response_format'):
        await oa.audio.transcriptions.create(model='whisper-1', file=upload(np.zeros(8000, np.int16), 8000), response_format='xml')


async def test_requires_keys(cloud):
    async with aiohttp.ClientSession() as s:
        r = await s.post(cloud.openai_base_url + '/chat/completions', json={'model': 'm', 'messages': []})
        assert r.status == 401 and 'API key' in (await r.json())['error']['message']
        r = await s.post(cloud.url + '/v1/text-to-speech/v/stream', json={'text': 'hi'})
        assert r.status == 401 and (await r.json())['detail']['status'] == 'needs_authorization'


# ---- chat ----

async def test_chat_streams_with_usage_and_the_history_reaches_the_server(cloud, oa):
    persona = load_persona()
    messages = [{'role': 'system', 'content': persona.system_prompt}, {'role': 'user', 'content': 'Hi, who is this?'}]
    chunks = await chat_stream(oa, messages, max_tokens=150, temperature=0.7)
    first = text_of(chunks)
    assert first == next(r.reply for r in persona.script if 'who is this' in r.keywords)  # the "who are you" rule
    assert chunks[0].choices[0].delta.role == 'assistant'
    assert chunks[-2].choices[0].finish_reason == 'stop'
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    messages += [{'role': 'assistant', 'content': first}, {'role': 'user', 'content': 'What is your favourite colour?'}]
    second = text_of(await chat_stream(oa, messages))
    assert 'Cadmium orange' in second
    sent = cloud.journal['chat']
    assert [m['content'] for m in sent[1]['messages'][1:3]] == ['Hi, who is this?', first]
    assert (sent[0]['model'], sent[0]['stream'], sent[0]['include_usage'], sent[0]['max_tokens'], sent[0]['temperature']) == \
           ('gpt-4o-mini', True, True, 150, 0.7)


async def test_chat_conversation_does_not_repeat_itself(oa):
    messages, replies = [{'role': 'system', 'content': 'You are the artist.'}], []
    for said in ['mmm', 'okay', 'right', 'sure']:
        messages.append({'role': 'user', 'content': said})
        replies.append(text_of(await chat_stream(oa, messages)))
        messages.append({'role': 'assistant', 'content': replies[-1]})
    assert len(set(replies)) == len(replies), replies  # small talk moves on


async def test_chat_max_tokens_and_plain_json(oa):
    m = [{'role': 'user', 'content': 'tell me about your paintings'}]
    chunks = await chat_stream(oa, m, max_tokens=4)
    assert chunks[-2].choices[0].finish_reason == 'length' and chunks[-1].usage.completion_tokens == 4
    full = await oa.chat.completions.create(model='gpt-4o-mini', messages=m)
    assert full.choices[0].message.content.startswith(text_of(chunks)) and full.choices[0].finish_reason == 'stop'
    assert full.usage.completion_tokens > 4
    with pytest.raises(openai.BadRequestError, match='messages'):
        await oa.chat.completions.create(model='gpt-4o-mini', messages=[])


async def test_chat_wire_format(engines, aiohttp_client):
    "Raw SSE as the real service sends it: usage chunk with choices [], then data: [DONE]."
    client = await aiohttp_client(create_fake_cloud('instant', engines=engines))
    r = await client.post('/v1/chat/completions', headers={'Authorization': 'Bearer fake'},
                          json={'model': 'gpt-4o-mini', 'messages': [{'role': 'user', 'content': 'hello'}], 'stream': True,
                                'stream_options': {'include_usage': True}})
    assert r.status == 200 and r.headers['Content-Type'].startswith('text/event-stream')
    events = [e for e in (await r.text()).split('\n\n') if e]
    assert all(e.startswith('data: ') for e in events) and events[-1] == 'data: [DONE]'
    last = json.loads(events[-2][6:])
    assert last['choices'] == [] and set(last['usage']) == {'prompt_tokens', 'completion_tokens', 'total_tokens'}
    assert all(json.loads(e[6:])['usage'] is None for e in events[:-2])


# ---- text-to-speech ----

def sweep(text, sr=22050):
    "A deterministic stand-in for eSpeak (whose output varies by a few samples between calls)."
    t = np.arange(int(0.05 * len(text) * sr)) / sr
    return (8000 * np.sin(2 * np.pi * (200 * t + 1400 * t ** 2 / t[-1]))).astype(np.int16), sr


async def test_elevenlabs_bytes_are_the_synthesized_speech(engines):
    async with running_fake_cloud('instant', engines=Engines(engines.stt, engines.brain, sweep)) as c:
        el = AsyncElevenLabs(api_key='fake', base_url=c.elevenlabs_base_url)
        ulaw = b''.join([x async for x in el.text_to_speech.stream(voice_id='v', text='Hello there.', output_format='ulaw_8000')])
        assert ulaw == encode_audio(*sweep('Hello there.'), 'ulaw_8000')[0]


async def test_elevenlabs_ulaw_8000_is_headerless_mulaw(cloud, el):
    text = 'Painting is where I slow down.'
    ulaw = b''.join([c async for c in el.text_to_speech.stream(
        voice_id='voice-1', text=text, model_id='eleven_flash_v2_5', output_format='ulaw_8000', optimize_streaming_latency=3,
        voice_settings=VoiceSettings(stability=0.4, similarity_boost=0.75, style=0.0, use_speaker_boost=True, speed=1.0))])
    sent = cloud.journal.last('tts')
    assert ulaw[:4] != b'RIFF' and ulaw[:3] != b'ID3'
    assert abs(len(ulaw) - sent['audio_s'] * 8000) <= 8
    assert np.abs(ulaw_decode(ulaw).astype(float)).mean() > 100  # speech, not silence
    assert (sent['voice_id'], sent['model_id'], sent['output_format'], sent['stream'], sent['optimize_streaming_latency']) == \
           ('voice-1', 'eleven_flash_v2_5', 'ulaw_8000', True, '3')
    assert sent['voice_settings'] == {'stability': 0.4, 'similarity_boost': 0.75, 'style': 0.0, 'use_speaker_boost': True, 'speed': 1.0}


@pytest.mark.parametrize('fmt,bytes_per_s', [('pcm_8000', 16000), ('pcm_16000', 32000), ('pcm_22050', 44100), ('pcm_24000', 48000)])
async def test_elevenlabs_pcm_lengths(cloud, el, fmt, bytes_per_s):
    pcm = b''.join([c async for c in el.text_to_speech.convert(voice_id='v', text='One two three four.', output_format=fmt)])
    sent = cloud.journal.last('tts')
    assert sent['stream'] is False and abs(len(pcm) - sent['audio_s'] * bytes_per_s) <= 4 and len(pcm) % 2 == 0


async def test_elevenlabs_formats_and_errors(cloud, el):
    mp3 = b''.join([c async for c in el.text_to_speech.stream(voice_id='v', text='Hello.', output_format='mp3_44100_128')])
    assert mp3[:3] == b'ID3' or mp3[0] == 0xFF
    with pytest.raises(ApiError) as e:
        async for _ in el.text_to_speech.stream(voice_id='v', text='Hello.', output_format='aac_44100'): pass
    assert e.value.status_code == 422


async def test_openai_speech_pcm_is_24k_and_wav_has_a_header(cloud, oa):
    async with oa.audio.speech.with_streaming_response.create(model='tts-1', voice='alloy', input='Good morning.', response_format='pcm') as r:
        pcm = b''.join([c async for c in r.iter_bytes()])
    assert pcm[:4] != b'RIFF' and abs(len(pcm) - cloud.journal.last('speech')['audio_s'] * 48000) <= 4
    wav = (await oa.audio.speech.create(model='tts-1', voice='alloy', input='Good morning.', response_format='wav')).content
    assert wav[:4] == b'RIFF' and abs(len(wav) - 44 - cloud.journal.last('speech')['audio_s'] * 48000) <= 4
    with pytest.raises(openai.BadRequestError, match='aac'):
        await oa.audio.speech.create(model='tts-1', voice='alloy', input='Hi.', response_format='aac')


# ---- faults ----

async def test_each_fault_as_the_sdk_sees_it_and_the_next_request_succeeds(cloud):
    oa = AsyncOpenAI(api_key='fake', base_url=cloud.openai_base_url, max_retries=0, timeout=0.3)
    seen = {}
    for kind in FAULT_KINDS:
        cloud.faults.fail_next('chat', kind)
        try: await chat_stream(oa, [{'role': 'user', 'content': 'hello'}]); seen[kind] = None
        except Exception as e: seen[kind] = e
        assert text_of(await chat_stream(oa, [{'role': 'user', 'content': 'hello'}]))
    await oa.close()
    assert isinstance(seen['error'], openai.InternalServerError) and seen['error'].status_code == 500
    assert seen['error'].type == 'server_error' and 'injected' in seen['error'].message
    assert isinstance(seen['hang'], openai.APITimeoutError) and isinstance(seen['stall'], openai.APITimeoutError)
    assert isinstance(seen['drop'], openai.APIConnectionError) and not isinstance(seen['drop'], openai.APITimeoutError)
    assert isinstance(seen['malformed'], json.JSONDecodeError)
    assert [e['fault'] for e in cloud.journal['chat']] == [k for kind in FAULT_KINDS for k in (kind, None)]


@pytest.mark.parametrize('kind', ['error', 'drop', 'malformed', 'stall'])
async def test_elevenlabs_faults(cloud, kind):
    el = AsyncElevenLabs(api_key='fake', base_url=cloud.elevenlabs_base_url)
    cloud.faults.fail_next('tts', kind)
    chunks, error = [], None
    try:
        async for c in el.text_to_speech.stream(voice_id='v', text='Hello there, how are you?', output_format='ulaw_8000',
                                                request_options={'max_retries': 0, 'timeout_in_seconds': 1}):
            chunks.append(c)
    except Exception as e: error = e
    audio = b''.join(chunks)
    if kind == 'error': assert isinstance(error, ApiError) and error.status_code == 500 and error.body['detail']['message']
    if kind == 'malformed': assert error is None and audio[:4] == b'RIFF'  # only the client can tell
    if kind in ('drop', 'stall'): assert error is not None  # after the first piece of audio (the SDK buffers 1 KiB)
    assert cloud.journal.last('tts')['fault'] == kind


async def test_error_status_is_settable(engines):
    async with running_fake_cloud('instant', faults=Faults(error=1., status=429), engines=engines) as c:
        oa = AsyncOpenAI(api_key='fake', base_url=c.openai_base_url, max_retries=0)
        with pytest.raises(openai.RateLimitError): await oa.chat.completions.create(model='m', messages=[{'role': 'user', 'content': 'x'}])
        await oa.close()


async def test_random_faults_repeat_with_the_seed(engines):
    async def run():
        async with running_fake_cloud('instant', faults=Faults(error=0.3, malformed=0.2, seed=3), engines=engines) as c:
            oa = AsyncOpenAI(api_key='fake', base_url=c.openai_base_url, max_retries=0)
            out = []
            for _ in range(12):
                try: await chat_stream(oa, [{'role': 'user', 'content': 'hi'}]); out.append('ok')
                except Exception as e: out.append(type(e).__name__)
            await oa.close()
            return out, c.faults.injected
    (a, ia), (b, ib) = await run(), await run()
    assert a == b and ia == ib and 'ok' in a and len(set(a)) == 3


async def test_hanging_request_is_released_at_shutdown(engines):
    async with running_fake_cloud('instant', faults=Faults().fail_next('stt', 'hang'), engines=engines) as c:
        oa = AsyncOpenAI(api_key='fake', base_url=c.openai_base_url, max_retries=0, timeout=60)
        task = asyncio.create_task(oa.audio.transcriptions.create(model='whisper-1', file=upload(np.zeros(8000, np.int16), 8000)))
        while not c.journal.count('stt'): await asyncio.sleep(0.01)
    with pytest.raises(openai.APIError): await task
    await oa.close()


# ---- latency ----

async def test_latency_profile_is_applied_to_every_endpoint(engines):
    p = get_profile('typical', stt_s=0.05, first_token_s=0.06, tokens_per_s=200, first_audio_s=0.04, speed=10)
    async with running_fake_cloud(p, engines=engines) as c:
        oa = AsyncOpenAI(api_key='fake', base_url=c.openai_base_url, max_retries=0)
        el = AsyncElevenLabs(api_key='fake', base_url=c.elevenlabs_base_url)
        pcm, sr = engines.synth('hello there')
        await oa.audio.transcriptions.create(model='whisper-1', file=upload(pcm, sr))
        start, arrivals = time.perf_counter(), []
        for chunk in await chat_stream(oa, [{'role': 'user', 'content': 'tell me about your paintings'}]):
            arrivals.append(time.perf_counter() - start)
        async for _ in el.text_to_speech.stream(voice_id='v', text='Hello there, nice to meet you.', output_format='ulaw_8000'): pass
        await oa.close()
        j = c.journal
        assert j.last('stt')['due_s'] == (0.05, 0.05)
        n = j.last('chat')['due_s']
        assert n[0] == 0.06 and n[1] == pytest.approx(0.06 + (len(j.last('chat')['reply'].split()) - 1) / 200)
        t = j.last('tts')['due_s']
        assert t[0] == 0.04 and t[1] == pytest.approx(0.04 + (int(np.ceil(j.last('tts')['audio_s'] * 10)) - 1) * 0.01)
        assert arrivals == sorted(arrivals)


# ---- control over HTTP and the CLI entry point ----

async def test_control_endpoints(cloud, oa):
    async with aiohttp.ClientSession() as s:
        state = await (await s.post(cloud.url + '/_control/faults', json={'endpoint': 'chat', 'kind': 'error', 'n': 1})).json()
        assert state['faults']['next'] == {'chat': ['error']}
        with pytest.raises(openai.InternalServerError): await chat_stream(oa, [{'role': 'user', 'content': 'hi'}])
        assert text_of(await chat_stream(oa, [{'role': 'user', 'content': 'hi'}]))
        await s.post(cloud.url + '/_control/faults', json={'error': 1.0, 'endpoints': ['chat'], 'seed': 1})
        with pytest.raises(openai.InternalServerError): await chat_stream(oa, [{'role': 'user', 'content': 'hi'}])
        await s.delete(cloud.url + '/_control/faults')
        assert text_of(await chat_stream(oa, [{'role': 'user', 'content': 'hi'}]))
        r = await s.post(cloud.url + '/_control/faults', json={'error': 2.0})
        assert r.status == 400
        state = await (await s.post(cloud.url + '/_control/profile', json={'name': 'slow', 'first_token_s': 0.01})).json()
        assert state['profile']['name'] == 'slow' and state['profile']['first_token_s'] == 0.01 and cloud.profile.stt_s == 0.9
        got = await (await s.get(cloud.url + '/_control/requests/chat')).json()
        assert len(got) == 4 and got[0]['messages'] == [{'role': 'user', 'content': 'hi'}]
        assert (await s.get(cloud.url + '/_control/requests/nope')).status == 404
        assert (await (await s.get(cloud.url + '/_control')).json())['requests']['chat'] == 4


def test_serve_fake_cloud_from_another_process():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    code = f"from artist_hotline.fakecloud import serve_fake_cloud; serve_fake_cloud(port={port}, profile='instant')"
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        from openai import OpenAI
        client = OpenAI(api_key='fake', base_url=f'http://127.0.0.1:{port}/v1', max_retries=0, timeout=5)
        for _ in range(300):
            try: reply = client.chat.completions.create(model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'hi'}]); break
            except openai.APIConnectionError: time.sleep(0.1)
        else: pytest.fail('the fake cloud did not start')
        assert reply.choices[0].message.content
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f'http://127.0.0.1:{port}/v1' in out
