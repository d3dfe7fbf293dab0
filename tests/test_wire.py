"The plain-HTTP adapters against the fake cloud, checked against the SDK adapters they stand in for."
import asyncio

import numpy as np
import pytest

from artist_hotline.cloud import ElevenLabsTTS, OpenAIChat, OpenAISTT
from artist_hotline.fakecloud import FAULT_KINDS, Engines, default_engines, running_fake_cloud
from artist_hotline.persona import load_persona
from artist_hotline.providers import EchoSTT, LanguageModel, ProviderError, SpeechToText
from artist_hotline.wire import HttpElevenLabsTTS, HttpOpenAIChat, HttpOpenAISTT, check_elevenlabs, check_openai

VOLATILE = ('at', 'due_s', 'audio_s', 'compute_s', 'late_s')  # when it arrived and how long the engines took; eSpeak's length varies by a few samples


@pytest.fixture(scope='module')
def engines(): return default_engines()


@pytest.fixture
async def cloud(engines):
    async with running_fake_cloud('instant', engines=engines) as c: yield c


def pair(cloud, **kw):
    "The same three adapters, through the SDKs and over plain HTTP."
    o = dict(api_key='fake', base_url=cloud.openai_base_url, **kw)
    e = dict(api_key='fake', base_url=cloud.elevenlabs_base_url, **kw)
    return {'sdk': {'stt': OpenAISTT(prompt='Rothko', **o), 'chat': OpenAIChat(max_tokens=40, **o), 'tts': ElevenLabsTTS('voice-2', **e)},
            'http': {'stt': HttpOpenAISTT(prompt='Rothko', **o), 'chat': HttpOpenAIChat(max_tokens=40, **o), 'tts': HttpElevenLabsTTS('voice-2', **e)}}


async def use(a, pcm, sr=8000, usage=None):
    if isinstance(a, SpeechToText): return await a.transcribe(pcm, sr)
    if isinstance(a, LanguageModel):
        return ''.join([p async for p in a.reply([{'role': 'system', 'content': load_persona().system_prompt},
                                                  {'role': 'user', 'content': 'who is this?'}], usage)])
    return b''.join([c async for c in a.speak('I paint the sea every morning.')])


async def test_same_requests_and_answers_as_the_sdks(engines, cloud):
    pcm, sr = engines.synth('what is your favourite colour')
    seen = {}
    for kind, ads in pair(cloud).items():
        for endpoint, a in ads.items():
            usage = {}
            out = await use(a, pcm, sr, usage)
            sent = {k: v for k, v in cloud.journal.last(endpoint).items() if k not in VOLATILE}
            seen[kind, endpoint] = (out if endpoint != 'tts' else len(out) > 8000, usage if endpoint == 'chat' else None, sent)
            await a.aclose()
    for endpoint in ('stt', 'chat', 'tts'): assert seen['sdk', endpoint] == seen['http', endpoint], endpoint
    assert seen['http', 'chat'][1]['completion_tokens'] > 3 and seen['http', 'stt'][2]['filename'] == 'turn.wav'


async def test_every_fault_fails_like_the_sdk_and_the_next_request_works(engines):
    quick = Engines(EchoSTT(['hello'] * 100), engines.brain, engines.synth)
    async with running_fake_cloud('instant', engines=quick) as cloud:
        pcm, sr = engines.synth('hello there')
        messages = {}
        for kind, ads in pair(cloud, timeout=1.0).items():  # long enough for a loaded machine to connect, short enough for hangs
            for endpoint, a in ads.items():
                for fault in FAULT_KINDS:
                    cloud.faults.fail_next(endpoint, fault)
                    with pytest.raises(ProviderError, match=a.name) as e: await use(a, pcm, sr)
                    messages[kind, endpoint, fault] = str(e.value)
                    assert cloud.journal.last(endpoint)['fault'] == fault
                    assert await use(a, pcm, sr)
                await a.aclose()
        for (kind, endpoint, fault), m in messages.items():  # the same kind of message, whichever client sent the request
            want = {'error': 'HTTP 500', 'hang': 'timed out', 'stall': 'timed out', 'drop': 'connection failed',
                    'malformed': 'unreadable answer' if endpoint in ('stt', 'chat') else 'WAV file'}[fault]
            assert want in m, (kind, endpoint, fault, m)
        assert messages['http', 'chat', 'error'] == messages['sdk', 'chat', 'error']  # the service's own words


async def test_one_request_per_call_no_retries(engines, cloud):
    pcm, sr = engines.synth('hello')
    for endpoint, a in pair(cloud)['http'].items():
        cloud.faults.fail_next(endpoint, 'error', n=3)
        with pytest.raises(ProviderError, match='HTTP 500'): await use(a, pcm, sr)
        assert cloud.journal.count(endpoint) == 1, endpoint
        cloud.faults.clear()
        await a.aclose()


async def test_abandoned_reply_closes_the_stream_and_the_adapter_goes_on(cloud):
    llm = HttpOpenAIChat(api_key='fake', base_url=cloud.openai_base_url)
    cloud.profile.tokens_per_s = 20  # still streaming when it is abandoned
    gen = llm.reply([{'role': 'user', 'content': 'tell me about your paintings'}])
    first = await gen.__anext__()
    await gen.aclose()
    cloud.profile.tokens_per_s = 0
    assert first and await use(llm, None) and cloud.journal.count('chat') == 2
    await llm.aclose()


async def test_concurrent_requests_share_the_session(engines, cloud):
    tts = HttpElevenLabsTTS('v', api_key='fake', base_url=cloud.elevenlabs_base_url)
    audio = await asyncio.gather(*[use(tts, None) for _ in range(8)])
    assert all(len(a) > 8000 for a in audio) and cloud.journal.count('tts') == 8
    await tts.aclose()


def test_missing_keys_are_provider_errors(monkeypatch):
    monkeypatch.setenv('OPENAI_API_KEY', 'from-the-environment')  # never read: keys come from the settings
    monkeypatch.setenv('ELEVENLABS_API_KEY', 'from-the-environment')
    for make in (HttpOpenAISTT, HttpOpenAIChat, lambda: HttpElevenLabsTTS('v')):
        with pytest.raises(ProviderError, match='no API key given'): make()


async def test_default_base_urls_are_the_services(monkeypatch):
    monkeypatch.setenv('OPENAI_BASE_URL', 'http://127.0.0.1:9/v1')  # never read
    assert HttpOpenAIChat(api_key='k').base_url == 'https://api.openai.com/v1'
    assert HttpElevenLabsTTS('v', api_key='k').base_url == 'https://api.elevenlabs.io'


async def test_start_up_checks(cloud):
    assert await check_openai('fake', cloud.openai_base_url) is None
    assert await check_elevenlabs('fake', 'voice-1', cloud.elevenlabs_base_url) is None
    cloud.voices.only({'voice-1'})
    assert 'HTTP 404' in await check_elevenlabs('fake', 'unknown', cloud.elevenlabs_base_url)
    assert 'no voice id' in await check_elevenlabs('fake', '', cloud.elevenlabs_base_url)
    assert 'unreachable' in await check_openai('fake', 'http://127.0.0.1:9/v1', timeout=1)


async def test_unreachable_service_is_a_connection_failure():
    llm = HttpOpenAIChat(api_key='k', base_url='http://127.0.0.1:9/v1', timeout=2)  # nothing listens on the discard port
    with pytest.raises(ProviderError, match='connection failed'): await use(llm, None)
    await llm.aclose()
    stt = HttpOpenAISTT(api_key='k', base_url='http://127.0.0.1:9/v1')
    assert await stt.transcribe(np.zeros(10, np.int16)) == ''  # too short to send: no request at all
