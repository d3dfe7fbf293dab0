"What each call was about: insights stored with every finished call (the model's through the fake cloud, or the heuristic), shown, and emailed over real SMTP."
import asyncio, socket

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from artist_hotline.insights import heuristic_insights
from artist_hotline.offline import ScriptedBrain
from artist_hotline.persona import load_persona
from artist_hotline.providers import EchoSTT, Providers, ToneTTS
from artist_hotline.server import STORE, create_app
from artist_hotline.settings import Settings, settings_errors
from conftest import voiced
from artist_hotline.simulate import Step, simulate_call

TOKEN = 'calls-ui-token'
SAID = ['I love your paintings, they are wonderful.', 'Could you email me the list of paints you use?']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Mailbox:
    "An aiosmtpd handler that keeps each message and refuses mail to nobody@."
    def __init__(self): self.got = []
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith('nobody@'): return '550 5.1.1 no such mailbox'
        envelope.rcpt_tos.append(address)
        return '250 OK'
    async def handle_DATA(self, server, session, envelope):
        self.got.append(envelope.content.decode().replace('\r\n', '\n'))
        return '250 Message accepted'


@pytest.fixture
def smtp():
    "A real SMTP server on 127.0.0.1; yields (mailbox, port)."
    box, port = Mailbox(), free_port()
    c = Controller(box, hostname='127.0.0.1', port=port)
    c.start()
    yield box, port
    c.stop()


async def a_call(aiohttp_server, tmp_path, llm=None, said=SAID, **settings):
    "One simulated call to a hotline with these settings; returns (the stored call, the app)."
    kw = dict(database_url=f'sqlite:///{tmp_path}/c.sqlite3', calls_ui_token=TOKEN) | settings
    app = create_app(Settings(**kw), providers=Providers(EchoSTT(list(said)), llm or ScriptedBrain(load_persona()), ToneTTS()))
    server = await aiohttp_server(app)
    base = str(server.make_url('')).rstrip('/')
    sim = await simulate_call(base, [Step(pcm=voiced(0.8, i), pause_s=0.2) for i in range(len(said))], speed=0)
    for _ in range(100):
        call = await app[STORE].get_call(sim.call_sid)
        if call and call['ended_at'] is not None and call.get('insights'): break
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as http:
        served = await (await http.get(f'{base}/calls/{sim.call_sid}', headers={'Authorization': f'Bearer {TOKEN}'})).json()
        page = await (await http.get(f'{base}/calls/ui', headers={'Authorization': f'Bearer {TOKEN}'})).text()
    return served, page, app


async def test_a_finished_call_holds_its_insights_offline(aiohttp_server, tmp_path, db_url):
    served, page, _ = await a_call(aiohttp_server, tmp_path, database_url=db_url)
    i = served['insights']
    assert {k: i[k] for k in ('sentiment', 'topics', 'follow_up')} == heuristic_insights(SAID)
    assert (i['sentiment'], i['topics'][0], i['follow_up'], i['by']) == ('positive', 'painting', [SAID[1]], 'heuristic')
    assert '<span class="mood positive">positive</span>' in page and '<span class="tag topic">painting</span>' in page


@pytest.mark.parametrize('client', ['http', 'sdk'])
async def test_the_model_writes_the_insights_against_the_schema_through_the_fake_cloud(aiohttp_server, tmp_path, client):
    from artist_hotline.cloud import OpenAIChat
    from artist_hotline.fakecloud import Engines, running_fake_cloud
    from artist_hotline.wire import HttpOpenAIChat
    from artist_hotline.offline import espeak_synth
    async with running_fake_cloud(engines=Engines(EchoSTT(), ScriptedBrain(load_persona()), espeak_synth)) as fc:
        llm = (HttpOpenAIChat if client == 'http' else OpenAIChat)(api_key='sk-test', base_url=fc.openai_base_url)
        served, _, _ = await a_call(aiohttp_server, tmp_path, llm=llm)
        asked = [e for e in fc.journal['chat'] if e.get('response_format')]
    assert served['insights']['by'] == 'openai:gpt-4o-mini' and served['insights']['follow_up'] == [SAID[1]]
    (req,) = asked
    assert req['response_format']['type'] == 'json_schema' and req['response_format']['json_schema']['name'] == 'call_insights'
    assert req['response_format']['json_schema']['strict'] is True


async def test_a_model_that_answers_off_the_schema_gives_way_to_the_heuristic(aiohttp_server, tmp_path):
    from artist_hotline.providers import CannedLLM
    served, _, _ = await a_call(aiohttp_server, tmp_path, llm=CannedLLM('Lovely. Tell me more?'))
    i = served['insights']
    assert i['by'] == 'heuristic' and i['error'].startswith('call insights') and i['topics'][0] == 'painting'


async def test_insights_can_be_turned_off(aiohttp_server, tmp_path):
    served, _, _ = await a_call(aiohttp_server, tmp_path, insights=False)
    assert served['insights'] is None and served['ended_at'] is not None


async def test_the_summary_email_goes_out_over_smtp(aiohttp_server, tmp_path, smtp):
    box, port = smtp
    served, _, _ = await a_call(aiohttp_server, tmp_path, notify_email_to='artist@example.com', notify_email_from='hotline@example.com',
                                smtp_host='127.0.0.1', smtp_port=port, smtp_starttls=False)
    for _ in range(50):
        if box.got: break
        await asyncio.sleep(0.05)
    (mail,) = box.got
    assert 'To: artist@example.com' in mail and 'Subject: Hotline call from' in mail
    assert 'Mood: positive' in mail and f'  - {SAID[1]}' in mail and served['sid'] in mail


async def email_failures(app) -> tuple[dict, list[dict]]:
    "The one call, and its email_failed events once written."
    for _ in range(100):
        (call,) = await app[STORE].list_calls()
        failed = [e for e in (await app[STORE].get_call(call['sid']))['events'] if e['kind'] == 'email_failed']
        if failed: break
        await asyncio.sleep(0.05)
    return call, failed


async def test_a_refused_email_is_recorded_and_the_call_ends_as_usual(aiohttp_server, tmp_path, smtp):
    box, port = smtp
    served, _, app = await a_call(aiohttp_server, tmp_path, notify_email_to='nobody@example.com', smtp_host='127.0.0.1',
                                  smtp_port=port, smtp_starttls=False)
    call, (failed,) = await email_failures(app)
    assert 'no such mailbox' in failed['detail']['error'] and box.got == []
    assert call['outcome'] and served['insights']['sentiment'] == 'positive'


async def test_an_smtp_server_nobody_runs_is_recorded(aiohttp_server, tmp_path):
    port = free_port()  # nobody listens there
    _, _, app = await a_call(aiohttp_server, tmp_path, notify_email_to='artist@example.com', smtp_host='127.0.0.1', smtp_port=port,
                             smtp_starttls=False)
    call, (failed,) = await email_failures(app)
    assert f'127.0.0.1:{port}' in failed['detail']['error'] and call['outcome']


def test_email_needs_an_smtp_server():
    assert settings_errors({'NOTIFY_EMAIL_TO': 'artist@example.com'}) == ['NOTIFY_EMAIL_TO needs SMTP_HOST']
