"The OpenAI and ElevenLabs adapters, against the fake cloud, through the official SDKs."
import numpy as np
import pytest
from openai import AsyncOpenAI

from artist_hotline.audio import read_audio, resample, to_phone, ulaw_decode, ulaw_encode
from artist_hotline.cloud import ElevenLabsTTS, OpenAIChat, OpenAISTT, OpenAITTS, provider_error
from artist_hotline.fakecloud import FAULT_KINDS, Engines, Faults, default_engines, encode_audio, get_profile, running_fake_cloud
from artist_hotline.persona import load_persona
from artist_hotline.providers import EchoSTT, LanguageModel, ProviderError, SpeechToText, TextToSpeech
from artist_hotline.wire import HttpOpenAIChat


@pytest.fixture(scope='module')
def engines(): return default_engines()


def sweep(text, sr=22050):
    "A deterministic stand-in for eSpeak (whose output varies by a few samples between calls): a 200-3000 Hz sweep."
    t = np.arange(int(0.05 * len(text) * sr)) / sr
    return (8000 * np.sin(2 * np.pi * (200 * t + 1400 * t ** 2 / t[-1]))).astype(np.int16), sr


@pytest.fixture
def sweeping(engines): return Engines(engines.stt, engines.brain, sweep)


@pytest.fixture
async def cloud(engines):
    async with running_fake_cloud('instant', engines=engines) as c: yield c


def adapters(cloud, timeout=60.):
    o = dict(api_key='fake', base_url=cloud.openai_base_url, timeout=timeout)
    return {'stt': OpenAISTT(**o), 'chat': OpenAIChat(**o), 'speech': OpenAITTS(**o),
            'tts': ElevenLabsTTS('voice-1', api_key='fake', base_url=cloud.elevenlabs_base_url, timeout=timeout)}


async def use(adapter, pcm=None, sr=8000, text='Hello there, how are you today?'):
    if isinstance(adapter, SpeechToText): return await adapter.transcribe(pcm, sr)
    if isinstance(adapter, LanguageModel): return ''.join([p async for p in adapter.reply([{'role': 'user', 'content': text}])])
    return b''.join([c async for c in adapter.speak(text)])


async def close(ads):
    for a in ads.values(): await a.aclose()


def test_names_and_interfaces(cloud):
    ads = adapters(cloud)
    assert {k: a.name for k, a in ads.items()} == {'stt': 'openai:gpt-4o-mini-transcribe', 'chat': 'openai:gpt-4o-mini',
                                                   'speech': 'openai:gpt-4o-mini-tts', 'tts': 'elevenlabs:eleven_flash_v2_5'}
    assert OpenAISTT('whisper-1', api_key='k').name == 'openai:whisper-1'
    assert isinstance(ads['stt'], SpeechToText) and isinstance(ads['chat'], LanguageModel)
    assert isinstance(ads['tts'], TextToSpeech) and isinstance(ads['speech'], TextToSpeech)


def test_missing_keys_are_provider_errors(monkeypatch):
    monkeypatch.setenv('OPENAI_API_KEY', 'from-the-environment')  # never read: keys come from the settings
    monkeypatch.setenv('ELEVENLABS_API_KEY', 'from-the-environment')
    for make in (OpenAISTT, OpenAIChat, OpenAITTS, lambda: ElevenLabsTTS('v')):
        with pytest.raises(ProviderError, match='no API key given'): make()


async def test_stt_uploads_a_wav_of_the_turn(engines, cloud):
    stt = OpenAISTT('whisper-1', api_key='fake', base_url=cloud.openai_base_url, prompt='Rothko', timeout=60)
    pcm, sr = engines.synth('what is your favourite colour')
    text = await stt.transcribe(to_phone(pcm, sr))
    sent = cloud.journal.last('stt')
    assert (sent['model'], sent['filename'], sent['content_type'], sent['response_format'], sent['language'], sent['prompt']) == \
           ('whisper-1', 'turn.wav', 'audio/wav', 'json', 'en', 'Rothko')
    assert sent['sample_rate'] == 8000 and abs(sent['audio_s'] - len(to_phone(pcm, sr)) / 8000) < 0.01
    assert text == sent['text'] and text == text.strip()
    assert await stt.transcribe(np.zeros(799, np.int16)) == '' and cloud.journal.count('stt') == 1  # < 0.1 s is never sent
    await stt.aclose()


async def test_stt_real_speech(corpus, cloud):
    stt = OpenAISTT(api_key='fake', base_url=cloud.openai_base_url, timeout=60)  # a loaded machine decodes slowly
    x, sr = read_audio(corpus / 'misc/goforward.raw')
    assert await stt.transcribe(x, sr) == 'go forward ten meters'
    assert {'forward', 'meters'} <= set((await stt.transcribe(to_phone(x, sr))).split())  # over the phone
    jfk, _ = read_audio(corpus / 'misc/jfk.wav', sr=8000)
    text = await stt.transcribe(jfk)
    assert len(set(text.split()) & {'and', 'so', 'my', 'fellow', 'ask', 'not', 'what', 'your', 'country', 'can', 'do', 'for', 'you'}) >= 4, text
    await stt.aclose()


async def test_chat_streams_pieces_and_fills_usage(cloud):
    llm = OpenAIChat(api_key='fake', base_url=cloud.openai_base_url, max_tokens=80, temperature=0.3)
    persona = load_persona()
    messages = [{'role': 'system', 'content': persona.system_prompt}, {'role': 'user', 'content': 'who is this?'}]
    usage = {}
    pieces = [p async for p in llm.reply(messages, usage)]
    assert ''.join(pieces) == next(r.reply for r in persona.script if 'who is this' in r.keywords) and all(pieces) and len(pieces) > 3
    assert usage['completion_tokens'] == len(pieces) and usage['prompt_tokens'] > len(persona.system_prompt.split())
    sent = cloud.journal.last('chat')
    assert (sent['model'], sent['stream'], sent['include_usage'], sent['max_tokens'], sent['temperature']) == \
           ('gpt-4o-mini', True, True, 80, 0.3)
    assert sent['messages'] == messages
    assert [p async for p in llm.reply(messages)] == pieces  # usage is optional
    await llm.aclose()


async def test_chat_can_be_abandoned_mid_reply(cloud):
    llm = OpenAIChat(api_key='fake', base_url=cloud.openai_base_url)
    cloud.profile.tokens_per_s = 20  # slow enough that the reply is still streaming
    gen = llm.reply([{'role': 'user', 'content': 'tell me about your paintings'}])
    first = await gen.__anext__()
    await gen.aclose()
    assert first and cloud.journal.count('chat') == 1
    assert await use(llm)  # the client is still usable
    await llm.aclose()


async def test_elevenlabs_bytes_pass_straight_through(sweeping):
    async with running_fake_cloud('instant', engines=sweeping) as cloud:
        v = load_persona().voice
        tts = ElevenLabsTTS('voice-9', api_key='fake', base_url=cloud.elevenlabs_base_url, voice=v, optimize_streaming_latency=None)
        text = 'I paint the sea every morning.'
        chunks = [c async for c in tts.speak(text)]
        assert b''.join(chunks) == encode_audio(*sweep(text), 'ulaw_8000')[0]
        sent = cloud.journal.last('tts')
        assert (sent['voice_id'], sent['output_format'], sent['model_id'], sent['stream']) == ('voice-9', 'ulaw_8000', 'eleven_flash_v2_5', True)
        assert sent['voice_settings'] == v.elevenlabs_settings() and sent['optimize_streaming_latency'] is None
        await tts.aclose()


async def test_openai_tts_resamples_24k_to_8k_mulaw_smoothly(sweeping):
    async with running_fake_cloud(get_profile('instant', chunk_ms=7, speed=20.), engines=sweeping) as cloud:  # small pieces cut mid-sample
        tts = OpenAITTS('echo', 'tts-1', api_key='fake', base_url=cloud.openai_base_url, speed=1.1)
        text = 'The light in the studio changes every hour.'
        chunks = [c async for c in tts.speak(text)]
        sent = cloud.journal.last('speech')
        assert (sent['response_format'], sent['model'], sent['voice'], sent['speed'], sent['instructions']) == ('pcm', 'tts-1', 'echo', 1.1, None)
        assert len(chunks) > 10
        streamed = ulaw_decode(b''.join(chunks))
        whole = resample(resample(*sweep(text), 24000), 24000, 8000)
        assert len(streamed) == len(whole)
        ref = ulaw_decode(ulaw_encode(whole)).astype(float)
        snr = 10 * np.log10(np.mean(ref ** 2) / np.mean((streamed - ref) ** 2))
        assert snr > 40, snr  # as good as resampling the whole sentence at once: no clicks at chunk boundaries
        await tts.aclose()


async def test_every_fault_is_a_provider_error_and_the_next_call_works(engines):
    quick = Engines(EchoSTT(['hello'] * 50), engines.brain, engines.synth)  # about the adapters, not pocketsphinx's speed
    async with running_fake_cloud('instant', engines=quick) as cloud:
        ads = adapters(cloud, timeout=0.3)
        pcm, sr = engines.synth('hello there')
        for endpoint, a in ads.items():
            for kind in FAULT_KINDS:
                cloud.faults.fail_next(endpoint, kind)
                with pytest.raises(ProviderError, match=a.name) as e: await use(a, pcm, sr)
                want = {'error': 'HTTP 500', 'hang': 'timed out', 'stall': 'timed out', 'drop': 'connection failed',
                        'malformed': 'unreadable answer' if endpoint in ('stt', 'chat') else 'WAV file'}[kind]
                assert want in str(e.value), (endpoint, kind, str(e.value))
                assert cloud.journal.last(endpoint)['fault'] == kind
                a.timeout = 60.  # the next call works: given time, as a busy machine needs
                assert await use(a, pcm, sr)
                a.timeout = 0.3
        await close(ads)


async def test_sdk_retries_are_off(engines, cloud):
    shared = AsyncOpenAI(api_key='fake', base_url=cloud.openai_base_url, max_retries=5)
    ads = {**adapters(cloud), 'chat': OpenAIChat(client=shared)}
    pcm, sr = engines.synth('hello')
    for endpoint, a in ads.items():
        cloud.faults.fail_next(endpoint, 'error', n=3)
        with pytest.raises(ProviderError): await use(a, pcm, sr)
        assert cloud.journal.count(endpoint) == 1, endpoint  # one request, no retry
        cloud.faults.clear()
    await close(ads)
    assert not shared.is_closed()  # a shared client is left to its owner
    await shared.close()


@pytest.mark.parametrize('chat', [OpenAIChat, HttpOpenAIChat])
async def test_random_faults_match_what_was_injected(engines, chat):
    async with running_fake_cloud('instant', faults=Faults(error=0.3, drop=0.2, seed=5), engines=engines) as c:
        llm = chat(api_key='fake', base_url=c.openai_base_url, timeout=2)
        failed = 0
        for _ in range(20):
            try: await use(llm)
            except ProviderError: failed += 1
        assert failed == len(c.faults.injected) and 0 < failed < 20
        await llm.aclose()


async def test_timeout_parameter_bounds_a_hang(cloud):
    llm = OpenAIChat(api_key='fake', base_url=cloud.openai_base_url, timeout=0.2)
    cloud.faults.fail_next('chat', 'hang')
    with pytest.raises(ProviderError, match='timed out'): await use(llm)
    await llm.aclose()


async def test_latency_profile_reaches_the_adapters(engines):
    async with running_fake_cloud(get_profile('typical', first_token_s=0.05, tokens_per_s=100), engines=engines) as c:
        llm = OpenAIChat(api_key='fake', base_url=c.openai_base_url)
        assert await use(llm)
        assert c.journal.last('chat')['due_s'][0] == 0.05
        await llm.aclose()


def test_provider_error_messages():
    from elevenlabs.core.api_error import ApiError
    e = ApiError(status_code=422, headers={}, body={'detail': [{'loc': ['body', 'text'], 'msg': 'Field required'}]})
    assert str(provider_error('elevenlabs:x', e)) == 'elevenlabs:x: HTTP 422: Field required'
    assert str(provider_error('x', RuntimeError('odd'))) == 'x: RuntimeError: odd'


async def test_elevenlabs_base_url_is_given_not_read(cloud, monkeypatch):
    monkeypatch.setenv('ELEVENLABS_BASE_URL', 'http://127.0.0.1:9')  # never read
    tts = ElevenLabsTTS('v', api_key='fake', base_url=cloud.elevenlabs_base_url)
    assert await use(tts) and cloud.journal.count('tts') == 1
    await tts.aclose()
