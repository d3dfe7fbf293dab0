"The fake cloud's ears (pocketsphinx, Whisper heard live, the oracle) through the hotline's own Realtime client, and the delays the client really sees."
import asyncio, base64

import aiohttp
import numpy as np
import pytest

from artist_hotline.audio import FRAME_SAMPLES, SAMPLE_RATE, to_phone, ulaw_decode, ulaw_encode
from artist_hotline.cli import parser
from artist_hotline.fakecloud import EARS, Engines, KnownEar, create_fake_cloud, get_profile, running_fake_cloud
from artist_hotline.neural import neural_engines, piper_synth
from artist_hotline.offline import ScriptedBrain, espeak_synth
from artist_hotline.persona import load_persona
from artist_hotline.providers import EchoSTT
from artist_hotline.realtime import HttpOpenAIRealtimeSTT
from artist_hotline.simulate import voiced_span

SENTENCE = 'please tell me about your latest painting'
CHUNK = 800  # 100 ms of µ-law, as the server sends it


@pytest.fixture(scope='module')
def speech():
    "Piper saying SENTENCE a word at a time (100 ms of quiet after each), with each word's (word, start s, end s)."
    if not neural_engines()['piper']: pytest.skip('Piper or its voice is not installed')
    parts, said, t = [], [], 0
    for w in SENTENCE.split():
        p = to_phone(*piper_synth(w))
        p = p[slice(*voiced_span(p))]
        said.append((w, t / SAMPLE_RATE, (t + len(p)) / SAMPLE_RATE))
        parts += [p, np.zeros(800, np.int16)]; t += len(p) + 800
    return np.concatenate(parts), said


def needs(ear: str):
    if ear == 'whisper' and not neural_engines()['whisper']: pytest.skip('faster-whisper or its pinned weights are not installed')


async def talk(cloud, pcm: np.ndarray, quiet_s: float = 0.6) -> dict:
    "Say `pcm` and `quiet_s` of silence in real time through HttpOpenAIRealtimeSTT, wait for the first words, commit: what arrived when."
    loop = asyncio.get_running_loop()
    rt = HttpOpenAIRealtimeSTT(api_key='sk-test', base_url=cloud.openai_base_url)
    told, got_words = [], asyncio.Event()
    def on_words(words):
        told.append((loop.time(), words)); got_words.set()
    stream = await rt.open(on_words)
    x, sent = np.r_[pcm, np.zeros(int(quiet_s * SAMPLE_RATE), np.int16)], []
    start = loop.time()
    for k, i in enumerate(range(0, len(x), CHUNK)):
        sent.append((i, loop.time()))  # (first sample of the piece, when it was handed to the client)
        stream.send(ulaw_encode(x[i:i + CHUNK]).tobytes())
        await asyncio.sleep(max(0., start + (k + 1) * CHUNK / SAMPLE_RATE - loop.time()))  # pacing, not a check
    await asyncio.wait_for(got_words.wait(), 60)  # a live model's words come while the caller talks (or soon after, on a busy machine)
    committed = loop.time()
    final = await asyncio.wait_for(stream.commit(), 60)
    done = loop.time()
    await stream.close(); await rt.aclose()
    return dict(told=told, sent=sent, committed=committed, final=final, final_at=done)


def sent_by(sent: list, sample: int) -> float:
    "When the piece holding `sample` was handed to the client."
    return max(t for i, t in sent if i <= sample)


@pytest.mark.parametrize('ear', EARS)
async def test_each_ear_gives_a_final_through_the_realtime_client(ear, speech):
    needs(ear)
    pcm, said = speech
    async with running_fake_cloud('instant', ear=ear) as cloud:
        if ear == 'known':
            async with aiohttp.ClientSession() as http:  # registered over HTTP, as a bench in another process does
                r = await http.post(cloud.url + '/_control/known', json={'pcm': base64.b64encode(pcm.astype('<i2').tobytes()).decode(), 'words': said})
                assert (r.status, (await r.json())['recordings']) == (200, 1)
        got = await talk(cloud, pcm)
    words = got['final'].lower().replace('.', '').split()
    if ear == 'known': assert got['final'] == SENTENCE + '.'  # the oracle writes a full stop after a recording's last word
    elif ear == 'whisper': assert {'tell', 'about', 'painting'} <= set(words)
    else: assert words  # pocketsphinx hears something (rarely the right words)
    assert got['told'] and cloud.journal.last('realtime')['live'] is True


@pytest.mark.parametrize('ear', EARS)
async def test_the_fakes_delays_really_happen(ear, speech):
    "On arrival at the client: no delta before the audio it covers was sent plus realtime_delta_s; no final before the commit plus realtime_final_s."
    needs(ear)
    pcm, said = speech
    profile = get_profile('instant', realtime_delta_s=0.3, realtime_final_s=0.5)
    async with running_fake_cloud(profile, ear=ear) as cloud:
        if ear == 'known': cloud.ear.register(pcm, words=said)
        got = await talk(cloud, pcm)
    first_voiced = sent_by(got['sent'], voiced_span(pcm)[0])
    for at, words in got['told']:
        assert at >= first_voiced + profile.realtime_delta_s
        n = min(len(words.split()), len(said))
        if ear == 'known':  # the oracle tells a word once its audio has all come
            assert at >= sent_by(got['sent'], int(said[n - 1][2] * SAMPLE_RATE) - 1) + profile.realtime_delta_s
        elif ear == 'whisper':  # no recognizer hears a word before its audio begins
            assert at >= sent_by(got['sent'], int(said[n - 1][1] * SAMPLE_RATE)) + profile.realtime_delta_s
    assert got['final_at'] >= got['committed'] + profile.realtime_final_s
    assert [t for t, _ in got['told']] == sorted(t for t, _ in got['told'])


def test_the_oracle_places_a_turn_anywhere_in_a_recording_and_the_latest_registration_wins(speech):
    pcm, said = speech
    ear = KnownEar()
    ear.register(pcm, words=said)
    cut = int(said[2][2] * SAMPLE_RATE) // FRAME_SAMPLES * FRAME_SAMPLES  # after "me"
    paused = np.r_[pcm[:cut], np.zeros(4000, np.int16), pcm[cut:]]
    ear.register(paused, words=[(w, s + 0.5 * (s >= said[2][2]), e + 0.5 * (s >= said[2][2])) for w, s, e in said])
    line = lambda x: ulaw_decode(ulaw_encode(x))
    assert ear.locate(line(pcm[:cut]))[0] == 1  # the audio both share: the later recording
    assert ear.hear(line(paused[:cut + 2000])) == 'please tell me'  # a turn that ends in the pause
    assert ear.hear(line(paused[cut + 4000:])) == 'about your latest painting.'  # and the next one
    assert (ear.hear(np.zeros(8000, np.int16)), ear.calls, ear.misses) == ('', 3, 1)


def test_the_oracle_is_not_misled_by_audio_a_recording_repeats(speech):
    pcm, said = speech
    loop = np.tile((3000 * np.sin(np.arange(FRAME_SAMPLES * 5) / 3)).astype(np.int16), 4)  # a loud "room tone", looped
    ear = KnownEar()
    ear.register(np.r_[pcm, loop], words=said)
    line = lambda x: ulaw_decode(ulaw_encode(x))
    assert ear.locate(line(loop)) is None  # the loop could be anywhere in it
    cut = int(said[2][2] * SAMPLE_RATE) // FRAME_SAMPLES * FRAME_SAMPLES  # after "me"
    assert ear.hear(line(np.r_[pcm, loop])[cut:]) == 'about your latest painting.'  # placed by the words, not the loop


def test_the_oracle_spreads_a_text_over_the_voiced_part(speech):
    pcm, said = speech
    ear = KnownEar()
    ear.register(pcm, text=SENTENCE)
    (w0, s0, _), *_, (w6, _, e6) = ear.words[0]
    assert (w0, w6) == ('please', 'painting') and abs(s0 - said[0][1]) < 0.05 and abs(e6 - said[-1][2]) < 0.05


async def test_control_known_needs_the_known_ear(aiohttp_client):
    quick = Engines(EchoSTT(['x']), ScriptedBrain(load_persona()), espeak_synth)
    client = await aiohttp_client(create_fake_cloud('instant', engines=quick))
    r = await client.post('/_control/known', json={'pcm': '', 'text': 'x'})
    assert r.status == 409 and 'known' in (await r.json())['error']
    assert (await (await client.get('/_control')).json())['ear'] == 'echo'


async def test_control_known_registers_and_forgets(aiohttp_client):
    client = await aiohttp_client(create_fake_cloud('instant', ear='known'))
    tone = (3000 * np.sin(np.arange(4000) / 3)).astype('<i2')
    assert (await client.post('/_control/known', json={'pcm': 'not base64!', 'text': 'x'})).status == 400
    r = await client.post('/_control/known', json={'pcm': base64.b64encode(tone.tobytes()).decode(), 'text': 'a tone'})
    assert (await r.json())['recordings'] == 1
    assert (await (await client.delete('/_control/known')).json())['recordings'] == 0


def test_unknown_ear_and_the_cli_flag():
    with pytest.raises(ValueError, match='unknown ear'): create_fake_cloud(ear='parrot')
    assert parser().parse_args(['fake-cloud', '--ear', 'whisper']).ear == 'whisper'
    assert parser().parse_args(['fake-cloud']).ear == 'pocketsphinx'
