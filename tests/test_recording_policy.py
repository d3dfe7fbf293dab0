"The recording policy of a persona, through the running server and the Twilio simulator: always, announce, ask, never; under ask, a caller who says \"don't record\" or presses 9 leaves no WAV."
import dataclasses, os

import pytest

from artist_hotline.persona import load_persona
from artist_hotline.providers import CannedLLM, EchoSTT, Providers, ToneTTS
from artist_hotline.server import STORE, create_app
from artist_hotline.settings import Settings
from artist_hotline.simulate import Step, simulate_call
from conftest import voiced
from test_calls_kept import settled


async def call_with(aiohttp_server, tmp_path, policy: str, texts: list, dtmf: str = '') -> tuple[dict, list]:
    "One call to a persona with `policy`, the caller's turns heard as `texts`; the stored call and the recordings folder."
    persona = dataclasses.replace(load_persona(), record=policy)
    rec = tmp_path / 'rec'
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/calls.sqlite3', recordings_dir=str(rec), store_spill='', record_calls=False),
                     persona=persona, providers=Providers(EchoSTT(texts), CannedLLM('Boats are wonderful.'), ToneTTS()))
    base = str((await aiohttp_server(app)).make_url('')).rstrip('/')
    steps = [Step(pcm=voiced(0.8, i), pause_s=0.2, dtmf=dtmf if i == 0 else '') for i in range(len(texts))]
    sim = await simulate_call(base, steps, speed=0)
    await settled(app)
    return await app[STORE].get_call(sim.call_sid), sorted(os.listdir(rec)) if rec.exists() else []


@pytest.mark.parametrize('policy, first, kept', [('always', 'greeting', True), ('announce', 'notice', True), ('never', 'greeting', False),
                                                 ('ask', 'notice', True)])
async def test_each_policy(aiohttp_server, tmp_path, policy, first, kept):
    call, wavs = await call_with(aiohttp_server, tmp_path, policy, ['i paint boats'])
    turns = [t for t in call['turns']]
    assert turns[0]['kind'] == first and (call['recording'] is not None) == kept and len(wavs) == int(kept), (turns[0], wavs)
    persona = load_persona()
    if policy == 'ask': assert turns[0]['reply_text'] == persona.recording_question
    if policy == 'announce': assert turns[0]['reply_text'] == persona.recording_notice


@pytest.mark.parametrize('how', ['words', 'key 9'])
async def test_a_caller_who_asks_not_to_be_recorded_leaves_no_wav(aiohttp_server, tmp_path, how):
    texts = ["please don't record this call", 'i paint boats'] if how == 'words' else ['i paint boats', 'and i live by the sea']
    call, wavs = await call_with(aiohttp_server, tmp_path, 'ask', texts, dtmf='9' if how == 'key 9' else '')
    assert wavs == [] and call['recording'] is None
    assert [e['detail'] for e in call['events'] if e['kind'] == 'recording_stopped'] == [{'by': how}]
    said = [t['reply_text'] for t in call['turns'] if t['kind'] in ('reply', 'recording')]
    assert load_persona().recording_stopped in said, said  # told so, instead of a reply to "don't record"


async def test_a_caller_cannot_stop_an_always_recording(aiohttp_server, tmp_path):
    call, wavs = await call_with(aiohttp_server, tmp_path, 'always', ["please don't record this call"], dtmf='9')
    assert len(wavs) == 1 and not [e for e in call['events'] if e['kind'] == 'recording_stopped']


async def test_personal_details_are_masked_in_what_is_stored_and_heard_by_the_model(aiohttp_server, tmp_path):
    "REDACT_TRANSCRIPTS: the stored turn, summary and events hold [phone], [email], [card]; the model was told the real ones."
    said = 'text me at 555 123 4567 or mail ann@example.com, my card is 4111 1111 1111 1111'
    llm = CannedLLM('I will text 555 123 4567 the link.')
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/calls.sqlite3', store_spill='', redact_transcripts=True),
                     providers=Providers(EchoSTT([said]), llm, ToneTTS()))
    base = str((await aiohttp_server(app)).make_url('')).rstrip('/')
    sim = await simulate_call(base, [Step(pcm=voiced(0.8, 0), pause_s=0.2)], speed=0)
    await settled(app)
    call = await app[STORE].get_call(sim.call_sid)
    (reply,) = [t for t in call['turns'] if t['kind'] == 'reply']
    assert reply['caller_text'] == 'text me at [phone] or mail [email], my card is [card]', reply['caller_text']
    assert reply['reply_text'] == 'I will text [phone] the link.' and '555' not in (call['summary'] or '')
    assert any(said in m['content'] for p in llm.prompts for m in p if m['role'] == 'user')  # the model heard them


async def test_the_keypad_menu(aiohttp_server, tmp_path):
    "# says the last reply again; a persona's own menu can end the call on a key."
    import numpy as np
    persona = dataclasses.replace(load_persona(), keys={'#': 'repeat', '0': 'goodbye'})
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/calls.sqlite3', store_spill=''), persona=persona,
                     providers=Providers(EchoSTT(['i paint boats']), CannedLLM('Boats are wonderful.'), ToneTTS()))
    base = str((await aiohttp_server(app)).make_url('')).rstrip('/')
    hush = np.zeros(1600, np.int16)
    sim = await simulate_call(base, [Step(pcm=voiced(0.8, 0), pause_s=0.2), Step(pcm=hush, dtmf='#', pause_s=0.2), Step(pcm=hush, dtmf='0')], speed=0)
    await settled(app)
    call = await app[STORE].get_call(sim.call_sid)
    assert [(t['kind'], t['reply_text']) for t in call['turns'] if t['kind'] in ('reply', 'repeat')] == [('reply', 'Boats are wonderful.')] * 1 + [('repeat', 'Boats are wonderful.')]
    assert call['dtmf'] == '#0' and call['outcome'] == 'caller pressed 0' and call['turns'][-1]['kind'] == 'goodbye'
