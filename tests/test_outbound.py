"Outbound calls: from the REST request, through a fake Twilio that rings the hotline as Twilio does, to a greeted, stored conversation; a machine gets the voicemail."
import asyncio, os, sys
from xml.etree import ElementTree
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from artist_hotline.notify import TWILIO_SENT, fake_twilio_api
from artist_hotline.offline import ScriptedBrain
from artist_hotline.outbound import TWILIO_CALLS, ring_hotline
from artist_hotline.persona import load_persona
from artist_hotline.providers import EchoSTT, Providers, ToneTTS
from artist_hotline.server import PERSONA, SETTINGS, STORE, create_app
from artist_hotline.settings import Settings
from conftest import voiced
from artist_hotline.simulate import Step

ACCT, TOKEN, UI = 'AC' + 'b' * 32, 'twilio-token', 'calls-ui-token'
OURS, CALLEE, MACHINE = '+15550001111', '+15551230001', '+15559990000'
MARA = 'name = "Mara"\nsystem_prompt = "You are Mara, a potter."\ngreeting = "Mara here."\noutbound_greeting = "Hi, it is Mara the potter, calling about your glazes."\n'


@pytest.fixture
async def line(aiohttp_server, tmp_path):
    "A fake Twilio that rings the hotline, and the hotline; yields (app, base URL, fake Twilio app)."
    (tmp_path / 'personas').mkdir()
    (tmp_path / 'personas' / 'mara.toml').write_text(MARA)
    callees = {CALLEE: [Step(pcm=voiced(0.8, 0), pause_s=0.2), Step(pcm=voiced(0.8, 1), pause_s=0.2)], MACHINE: 'machine'}
    fake = ring_hotline(fake_twilio_api(ACCT, TOKEN), callees)
    async with TestServer(fake, host='127.0.0.1') as twilio:
        s = Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3', twilio_account_sid=ACCT, twilio_auth_token=TOKEN, twilio_from_number=OURS,
                     twilio_api_base=str(twilio.make_url('')).rstrip('/'), calls_ui_token=UI, personas_dir=str(tmp_path / 'personas'))
        app = create_app(s, providers=Providers(EchoSTT(['I love clay, can you send me glaze recipes?', 'Bye.'] * 2),
                                                ScriptedBrain(load_persona()), ToneTTS()))
        server = await aiohttp_server(app)
        yield app, str(server.make_url('')).rstrip('/'), fake


async def place(base, body, token=UI):
    async with aiohttp.ClientSession() as http:
        r = await http.post(f'{base}/calls/outbound', json=body, headers={'Authorization': f'Bearer {token}'} if token else {})
        return r.status, await r.json() if r.content_type == 'application/json' else await r.text()


async def finished(app, fake, sid):
    await fake[TWILIO_CALLS][sid]['task']
    for _ in range(100):
        call = await app[STORE].get_call(sid)
        if call and call['ended_at'] and (call.get('insights') or call['outcome'].startswith('answered by')): return call
        await asyncio.sleep(0.05)
    return call


async def test_an_outbound_call_goes_from_the_rest_request_to_a_greeted_stored_conversation(line):
    app, base, fake = line
    status, body = await place(base, {'to': CALLEE})
    assert status == 201 and body['status'] == 'queued' and body['persona'] == 'Synthetic Jason'
    sid = body['sid']
    req = next(m for m in fake[TWILIO_SENT] if m.get('kind') == 'outbound')
    assert (req['To'], req['From'], req['MachineDetection'], req['Url']) == (CALLEE, OURS, 'Enable', f'{base}/voice?outbound=1')
    assert req['StatusCallback'] == f'{base}/call-status'
    call = await finished(app, fake, sid)
    assert fake[TWILIO_CALLS][sid]['status'] == 'completed' and fake[TWILIO_CALLS][sid]['result'].errors == []
    assert call['caller'] == CALLEE and call['persona'] == 'Synthetic Jason'  # the callee is the caller
    greeting = next(t for t in call['turns'] if t['kind'] == 'greeting')
    assert greeting['reply_text'] == app[PERSONA].outbound_greeting
    replies = [t for t in call['turns'] if t['kind'] == 'reply']
    assert [t['caller_text'] for t in replies] == ['I love clay, can you send me glaze recipes?', 'Bye.'] and replies[0]['heard_text']
    assert call['insights']['follow_up'] == ['I love clay, can you send me glaze recipes?'] and 'sculpture' in call['insights']['topics']


async def test_the_persona_who_calls_can_be_chosen(line):
    app, base, fake = line
    status, body = await place(base, {'to': CALLEE, 'persona': 'mara'})
    assert status == 201 and body['persona'] == 'mara'
    call = await finished(app, fake, body['sid'])
    assert call['persona'] == 'Mara'
    assert next(t for t in call['turns'] if t['kind'] == 'greeting')['reply_text'] == 'Hi, it is Mara the potter, calling about your glazes.'


async def test_an_answering_machine_gets_the_voicemail_and_a_hang_up(line):
    app, base, fake = line
    status, body = await place(base, {'to': MACHINE})
    call = await finished(app, fake, body['sid'])
    twiml = fake[TWILIO_CALLS][body['sid']]['twiml']
    doc = ElementTree.fromstring(twiml)
    assert [e.tag for e in doc] == ['Say', 'Hangup'] and doc.find('Say').text == app[PERSONA].voicemail
    assert call['outcome'] == 'answered by machine_start: voicemail left' and call['turns'] == []
    assert call['insights'] == {'sentiment': 'neutral', 'topics': [], 'follow_up': [], 'by': 'voicemail'}


async def test_outbound_requests_are_checked(line):
    app, base, fake = line
    assert (await place(base, {'to': CALLEE}, token=None))[0] == 401
    assert (await place(base, {'to': CALLEE}, token='wrong'))[0] == 401
    status, body = await place(base, {'to': '555-1234'})
    assert status == 400 and 'E.164' in body['error']
    status, body = await place(base, {'to': CALLEE, 'persona': 'nobody'})
    assert status == 400 and "no persona named 'nobody'" in body['error']
    assert (await place(base, ['not', 'an', 'object']))[0] == 400
    assert not any(m.get('kind') == 'outbound' for m in fake[TWILIO_SENT])


async def test_without_twilio_settings_no_call_is_placed(aiohttp_client, tmp_path):
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3', calls_ui_token=UI),
                     providers=Providers(EchoSTT(), ScriptedBrain(load_persona()), ToneTTS()))
    client = await aiohttp_client(app)
    r = await client.post('/calls/outbound', json={'to': CALLEE}, headers={'Authorization': f'Bearer {UI}'})
    assert r.status == 503 and 'TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM_NUMBER' in (await r.json())['error']


async def test_the_call_command_places_the_call(line, tmp_path):
    app, base, fake = line
    env = {**os.environ, 'TWILIO_ACCOUNT_SID': ACCT, 'TWILIO_AUTH_TOKEN': TOKEN, 'TWILIO_FROM_NUMBER': OURS, 'PUBLIC_URL': base,
           'TWILIO_API_BASE': app[SETTINGS].twilio_api_base, 'PERSONAS_DIR': str(tmp_path / 'personas')}
    cli = str(Path(sys.executable).parent / 'artist-hotline')
    p = await asyncio.create_subprocess_exec(cli, 'call', CALLEE, '--persona', 'mara', env=env, cwd=tmp_path,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 120)
    assert p.returncode == 0, err.decode()
    sid = out.decode().split()[1]
    call = await finished(app, fake, sid)
    assert call['persona'] == 'Mara' and call['caller'] == CALLEE


async def test_a_persona_made_for_a_request_has_its_engines_closed_when_the_server_stops(tmp_path):
    "Cloud engines for a persona first named by an outbound call are closed with the server's own: no HTTP session is left open."
    from artist_hotline.fakecloud import running_fake_cloud
    from artist_hotline.server import LINES
    (tmp_path / 'personas').mkdir()
    (tmp_path / 'personas' / 'mara.toml').write_text(MARA)
    fake = ring_hotline(fake_twilio_api(ACCT, TOKEN), {CALLEE: [Step(pcm=voiced(0.8, 0), pause_s=0.2)]})
    async with running_fake_cloud('instant') as cloud, TestServer(fake, host='127.0.0.1') as twilio:
        s = Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3', twilio_account_sid=ACCT, twilio_auth_token=TOKEN, twilio_from_number=OURS,
                     twilio_api_base=str(twilio.make_url('')).rstrip('/'), calls_ui_token=UI, personas_dir=str(tmp_path / 'personas'),
                     openai_api_key='k', openai_base_url=cloud.openai_base_url, elevenlabs_api_key='k', elevenlabs_voice_id='v',
                     elevenlabs_base_url=cloud.elevenlabs_base_url)
        app = create_app(s)
        server = TestServer(app, host='127.0.0.1')
        await server.start_server()
        own = {id(e) for e in app[LINES].engines.values()}
        status, body = await place(str(server.make_url('')).rstrip('/'), {'to': CALLEE, 'persona': 'mara'})
        assert status == 201
        call = await finished(app, fake, body['sid'])
        assert call['persona'] == 'Mara' and any(t['kind'] == 'greeting' and t['heard_text'] for t in call['turns'])  # in Mara's voice
        engines = list(app[LINES].engines.values())
        assert {id(e) for e in engines} - own  # Mara's voice was made for the request
        await server.close()
    sessions = [v for e in engines for v in vars(e).values() if isinstance(v, aiohttp.ClientSession)]
    assert len(sessions) >= 3 and all(h.closed for h in sessions), [type(e).__name__ for e in engines]
