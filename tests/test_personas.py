"A persona per number: the dialed number chooses who answers, with its own greeting, prompt and voice; the store and the calls page say who took each call."
import asyncio

import aiohttp
import pytest

from artist_hotline.persona import NUMBERS_FILE
from artist_hotline.providers import CannedLLM, EchoSTT, Providers, ToneTTS
from artist_hotline.server import LINES, PERSONA, STORE, create_app
from artist_hotline.settings import Settings
from conftest import voiced
from artist_hotline.simulate import Step, simulate_call

TOKEN = 'calls-ui-token'
MARA = '''name = "Mara"
system_prompt = "You are Mara, a potter who answers the hotline's second number."
greeting = "Mara here, the potter. What are you making?"
[voice]
piper_pitch = 0.9
espeak_voice = "en-gb"
'''


@pytest.fixture
def personas(tmp_path):
    d = tmp_path / 'personas'
    d.mkdir()
    (d / 'mara.toml').write_text(MARA)
    (d / NUMBERS_FILE).write_text('"+1 555 000 0002" = "mara"\ndefault = "synthetic-jason"\n')
    return d


async def test_the_dialed_number_chooses_the_persona(aiohttp_server, tmp_path, personas):
    llm = CannedLLM('Lovely.')
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3', personas_dir=str(personas), calls_ui_token=TOKEN),
                     providers=Providers(EchoSTT(['hello'] * 4), llm, ToneTTS()))
    server = await aiohttp_server(app)
    base = str(server.make_url('')).rstrip('/')
    mara = await simulate_call(base, [Step(pcm=voiced(0.8, 0), pause_s=0.2)], speed=0, to='+15550000002')
    jason = await simulate_call(base, [Step(pcm=voiced(0.8, 1), pause_s=0.2)], speed=0, to='+15550000001')
    for _ in range(100):
        calls = {c['sid']: c for c in await app[STORE].list_calls()}
        if len(calls) == 2 and all(c['ended_at'] for c in calls.values()): break
        await asyncio.sleep(0.05)
    assert (calls[mara.call_sid]['persona'], calls[jason.call_sid]['persona']) == ('Mara', 'Synthetic Jason')
    greetings = {sid: next(t['reply_text'] for t in (await app[STORE].get_call(sid))['turns'] if t['kind'] == 'greeting')
                 for sid in (mara.call_sid, jason.call_sid)}
    assert greetings[mara.call_sid] == 'Mara here, the potter. What are you making?'
    assert greetings[jason.call_sid] == app[PERSONA].greeting
    prompts = [p[0]['content'] for p in llm.prompts if p[0]['role'] == 'system' and 'Summarise' not in p[0]['content']]
    assert any(p.startswith("You are Mara, a potter") for p in prompts) and any('Synthetic Jason' in p for p in prompts)
    async with aiohttp.ClientSession() as http:
        page = await (await http.get(f'{base}/calls/ui', headers={'Authorization': f'Bearer {TOKEN}'})).text()
    assert f'{mara.call_sid} · Mara' in page and f'{jason.call_sid} · Synthetic Jason' in page


async def test_each_persona_speaks_with_its_own_voice_and_shares_the_ear(aiohttp_client, tmp_path, personas):
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3', personas_dir=str(personas)))
    await aiohttp_client(app)  # starts the engines
    mara, providers = app[LINES].get('mara')
    own = app[LINES].providers
    assert mara.name == 'Mara' and providers.tts.pitch == 0.9
    assert providers.stt is own.stt and providers.stream_stt is own.stream_stt
    assert providers.tts is not own.tts and providers.llm.persona.name == 'Mara'


def test_a_numbers_file_naming_a_missing_persona_stops_the_server(tmp_path, personas):
    (personas / NUMBERS_FILE).write_text('"+15550000003" = "nobody"\n')
    with pytest.raises(ValueError, match="no persona named 'nobody'"):
        create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3', personas_dir=str(personas)))
