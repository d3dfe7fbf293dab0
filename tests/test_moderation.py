"Moderation on the cloud path, through the running server and the fake cloud's /v1/moderations: flagged caller words get the persona's refusal; a flagged clause of a reply is never spoken (MODERATE_REPLIES, on by default)."
from artist_hotline.fakecloud import Engines, default_engines, running_fake_cloud
from artist_hotline.persona import load_persona
from artist_hotline.providers import CannedLLM, EchoSTT, Providers, ToneTTS
from artist_hotline.server import STORE, create_app
from artist_hotline.settings import CallSettings, Settings
from artist_hotline.simulate import Step, simulate_call
from artist_hotline.wire import HttpOpenAIChat, HttpOpenAIModeration
from conftest import voiced
from test_calls_kept import settled

JASON = load_persona()


async def a_call(aiohttp_server, tmp_path, cloud, said: str, **call):
    "One call whose caller says `said`, answered by the fake cloud's model and checked by its moderation."
    o = dict(api_key='fake', base_url=cloud.openai_base_url)
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3', store_spill='', call=CallSettings(**call)),
                     providers=Providers(EchoSTT([said]), HttpOpenAIChat(**o), ToneTTS(), moderator=HttpOpenAIModeration(**o)))
    base = str((await aiohttp_server(app)).make_url('')).rstrip('/')
    sim = await simulate_call(base, [Step(pcm=voiced(0.8, 0), pause_s=0.3)], speed=0)
    await settled(app)
    return await app[STORE].get_call(sim.call_sid)


async def test_flagged_caller_words_get_the_refusal(aiohttp_server, tmp_path):
    async with running_fake_cloud('instant', engines=default_engines(ear='known')) as cloud:
        call = await a_call(aiohttp_server, tmp_path, cloud, 'some days i want to hurt myself')
        checked = [e for e in cloud.journal['moderation'] if e['input'] == ['some days i want to hurt myself']]  # the reply's clauses are checked too
    (reply,) = [t for t in call['turns'] if t['kind'] == 'reply']
    assert reply['reply_text'] == JASON.refusal, reply
    assert [e['detail'] for e in call['events'] if e['kind'] == 'input_flagged'] == [{'turn': reply['idx'], 'why': 'self-harm', 'by': 'openai:omni-moderation-latest'}]
    assert [e['flagged'] for e in checked] == [[True]]


async def test_a_fine_turn_is_answered_by_the_model(aiohttp_server, tmp_path):
    async with running_fake_cloud('instant', engines=default_engines(ear='known')) as cloud:
        call = await a_call(aiohttp_server, tmp_path, cloud, 'who am i talking to')
    (reply,) = [t for t in call['turns'] if t['kind'] == 'reply']
    assert 'Synthetic Jason' in reply['reply_text'] and not [e for e in call['events'] if e['kind'].endswith('_flagged')]


async def test_a_flagged_reply_sentence_is_never_spoken(aiohttp_server, tmp_path):
    "The second sentence is flagged (the word list lets it by): it is never spoken, and the fallback is."
    eng = default_engines(ear='known')
    async with running_fake_cloud('instant', engines=Engines(eng.stt, CannedLLM('I paint outdoors. I paint people naked in the rain.'), eng.synth)) as cloud:
        call = await a_call(aiohttp_server, tmp_path, cloud, 'what do you paint')
    (reply,) = [t for t in call['turns'] if t['kind'] == 'reply']
    assert reply['outcome'] == 'fallback' and 'naked' not in reply['heard_text'] and JASON.fallback_lines[0] in reply['heard_text'], reply
    assert [e['detail']['why'] for e in call['events'] if e['kind'] == 'reply_flagged'] == ['sexual']
