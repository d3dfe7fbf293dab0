"Cloning the artist's voice: recordings checked, ElevenLabs' instant cloning through its SDK against the fake cloud, the voice written into the persona and then spoken."
import asyncio, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from artist_hotline.audio import write_wav
from artist_hotline.fakecloud import Engines, running_fake_cloud
from artist_hotline.offline import ScriptedBrain, espeak_synth
from artist_hotline.persona import load_persona
from artist_hotline.providers import EchoSTT
from artist_hotline.voiceclone import CloneError, check_recordings, clone_voice, set_voice_id

CLI = str(Path(sys.executable).parent / 'artist-hotline')
TEXT = 'I make paintings and sound pieces, mostly about memory, and I like to talk about them for a long while. '


@pytest.fixture(scope='module')
def speech(tmp_path_factory):
    "Three files of speech, 40 s in all, one of them a stereo call recording with the speech on the caller's side."
    d = tmp_path_factory.mktemp('voice')
    pcm, sr = espeak_synth(TEXT * 3)
    files = [write_wav(d / 'a.wav', pcm, sr), write_wav(d / 'b.flac', pcm, sr),
             write_wav(d / 'call.wav', np.stack([pcm, np.zeros_like(pcm)], axis=1), sr)]
    return [str(f) for f in files]


def test_the_recordings_are_checked(speech, tmp_path):
    checks, problems = check_recordings(speech)
    assert problems == [] and sum(c.seconds for c in checks) >= 30
    short = write_wav(tmp_path / 'short.wav', np.full(8000, 32767, np.int16), 8000)
    _, problems = check_recordings([short])
    assert any('1.0 s long' in p for p in problems) and any('clipped' in p for p in problems) and problems[-1].endswith('at least 30 s')
    assert 'too quiet' in check_recordings(speech[2:], 'bot')[1][0]


async def test_a_voice_is_cloned_through_the_sdk_and_then_spoken(speech, tmp_path):
    engines = Engines(EchoSTT(), ScriptedBrain(load_persona()), espeak_synth)
    async with running_fake_cloud(engines=engines) as fc:
        fc.voices.only({'premade-1'})
        vid = await clone_voice('Jason', speech, 'xi-test', fc.elevenlabs_base_url)
        (made,) = fc.voices.cloned
        assert made['voice_id'] == vid and made['name'] == 'Jason' and [f['filename'] for f in made['files']] == ['a.wav', 'b.wav', 'call.wav']
        assert all(f['seconds'] > 10 for f in made['files'])
        path = set_voice_id('synthetic-jason', vid, [tmp_path / 'personas'])
        persona = load_persona('synthetic-jason', [tmp_path / 'personas'])
        assert persona.voice.voice_id == vid and path == tmp_path / 'personas' / 'synthetic-jason.toml'
        from artist_hotline.wire import HttpElevenLabsTTS
        audio = b''.join([c async for c in HttpElevenLabsTTS(vid, api_key='xi-test', base_url=fc.elevenlabs_base_url).speak('Hello there.')])
        assert len(audio) > 1000  # the fake speaks in the new voice; an unknown one is refused:
        from artist_hotline.providers import ProviderError
        with pytest.raises(ProviderError, match='voice_not_found|404'):
            async for _ in HttpElevenLabsTTS('never-made', api_key='xi-test', base_url=fc.elevenlabs_base_url).speak('Hi.'): pass


async def test_bad_recordings_are_refused_before_anything_is_sent(tmp_path):
    quiet = write_wav(tmp_path / 'quiet.wav', np.zeros(8000 * 40, np.int16), 8000)
    with pytest.raises(CloneError, match='too quiet'): await clone_voice('Jason', [quiet], 'xi-test', 'http://127.0.0.1:9')
    with pytest.raises(CloneError, match='ELEVENLABS_API_KEY'): await clone_voice('Jason', [quiet], '', 'http://127.0.0.1:9')


async def test_the_fake_refuses_what_elevenlabs_refuses(speech):
    import aiohttp
    async with running_fake_cloud(engines=Engines(EchoSTT(), ScriptedBrain(load_persona()), espeak_synth)) as fc:
        async with aiohttp.ClientSession() as http:
            form = aiohttp.FormData(); form.add_field('name', 'x'); form.add_field('files', b'not audio', filename='x.wav')
            r = await http.post(f'{fc.elevenlabs_base_url}/v1/voices/add', data=form, headers={'xi-api-key': 'k'})
            assert r.status == 400 and (await r.json())['detail']['status'] == 'invalid_audio'
            form = aiohttp.FormData(); form.add_field('name', 'x')
            r = await http.post(f'{fc.elevenlabs_base_url}/v1/voices/add', data=form, headers={'xi-api-key': 'k'})
            assert r.status == 422 and (await r.json())['detail'][0]['loc'] == ['body', 'files']
            assert (await http.post(f'{fc.elevenlabs_base_url}/v1/voices/add', data={'name': 'x'})).status == 401


def test_the_command_clones_and_writes_the_persona(speech, tmp_path):
    "`artist-hotline clone-voice` against a fake cloud in another process."
    port = 18000 + os.getpid() % 1000
    fake = subprocess.Popen([CLI, 'fake-cloud', '--port', str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import urllib.request
        for _ in range(200):
            try: urllib.request.urlopen(f'http://127.0.0.1:{port}/_control', timeout=1); break
            except OSError: asyncio.run(asyncio.sleep(0.1))
        env = {**os.environ, 'ELEVENLABS_API_KEY': 'xi-test', 'ELEVENLABS_BASE_URL': f'http://127.0.0.1:{port}', 'PERSONAS_DIR': str(tmp_path / 'p')}
        out = subprocess.run([CLI, 'clone-voice', 'Jason', *speech], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        vid = out.stdout.strip().splitlines()[-1].split(': ')[1].split(';')[0]
        assert load_persona('synthetic-jason', [tmp_path / 'p']).voice.voice_id == vid
        bad = subprocess.run([CLI, 'clone-voice', 'Jason', speech[0]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 1 and 'at least 30 s' in bad.stderr
    finally:
        fake.terminate(); fake.wait(10)
