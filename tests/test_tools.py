"The persona's tools through the running server, the Twilio simulator and the fakes: a message left arrives as a text and an e-mail; a caller who asks for the artist is moved to ARTIST_PHONE with Twilio's REST update, and comes back to leave a message when the fake artist does not answer; a link texted; the call ended."
import asyncio

import aiohttp
import numpy as np

from artist_hotline.notify import TWILIO_DIALED, TWILIO_SENT, fake_twilio_api
from artist_hotline.offline import ScriptedBrain
from artist_hotline.persona import load_persona
from artist_hotline.providers import EchoSTT, Providers, ToneTTS
from artist_hotline.server import STORE, create_app
from artist_hotline.settings import CallSettings, Settings
from artist_hotline.simulate import Step, simulate_call
from conftest import voiced
from test_calls_kept import settled
from test_insights import smtp  # noqa: F401 (a fixture: a real SMTP server)

ACCT, TOKEN = 'AC' + '7' * 32, 'tools-auth-token'
ARTIST, OWNER, HOTLINE = '+15557654321', '+15550002222', '+15550001111'
JASON = load_persona()


async def line_with(aiohttp_server, tmp_path, said: list, smtp_port: int, artist: str = 'no-answer', **settings):
    "A hotline answering with the scripted brain (its intents use the tools) on the caller's `said`, its Twilio REST API and SMTP faked."
    rest = fake_twilio_api(ACCT, TOKEN, artist=artist)
    api = str((await aiohttp_server(rest)).make_url('')).rstrip('/')
    s = Settings(database_url=f'sqlite:///{tmp_path}/calls.sqlite3', store_spill='', twilio_account_sid=ACCT, twilio_auth_token=TOKEN,
                 twilio_api_base=api, notify_sms_to=OWNER, notify_sms_from=HOTLINE, notify_email_to='jason@example.com',
                 smtp_host='127.0.0.1', smtp_port=smtp_port, smtp_starttls=False, call=CallSettings(message_end_s=1.0), **settings)
    app = create_app(s, providers=Providers(EchoSTT(said), ScriptedBrain(JASON), ToneTTS()))
    return app, rest, str((await aiohttp_server(app)).make_url('')).rstrip('/')


def texts(rest, to: str) -> list[str]:
    return [m['Body'] for m in rest[TWILIO_SENT] if m['kind'] == 'message' and m['To'] == to]


async def test_a_message_left_in_a_call_arrives_as_text_and_email(aiohttp_server, tmp_path, smtp):
    box, port = smtp
    app, rest, base = await line_with(aiohttp_server, tmp_path, ['can i leave a message for jason', 'please call me back about the mural'], port,
                                      calls_ui_token='ui-token')
    sim = await simulate_call(base, [Step(pcm=voiced(0.8, 0), pause_s=0.3), Step(pcm=voiced(1.2, 1), pause_s=3.0)], auth_token=TOKEN)
    await settled(app)
    call = await app[STORE].get_call(sim.call_sid)
    said = [t['reply_text'] for t in call['turns']]
    assert JASON.message_prompt in said and JASON.message_taken in said, said  # asked for it, then thanked once the caller was quiet
    assert [e['detail'] for e in call['events'] if e['kind'] == 'message'] == [{'text': 'please call me back about the mural', 'sent': ['sms', 'email']}]
    assert [e['detail']['name'] for e in call['events'] if e['kind'] == 'tool'] == ['take_message']
    assert any('please call me back about the mural' in t for t in texts(rest, OWNER)), rest[TWILIO_SENT]
    assert any('Subject: Hotline message from' in m and 'please call me back about the mural' in m for m in box.got), box.got
    async with aiohttp.ClientSession() as http:  # and the calls page lists it
        page = await (await http.get(f'{base}/calls/ui', headers={'Authorization': 'Bearer ui-token'})).text()
    assert 'Messages for the artist' in page and 'please call me back about the mural<span class="meta"> · sent by sms, email' in page


async def test_can_i_talk_to_jason_moves_the_call_and_comes_back_to_take_a_message(aiohttp_server, tmp_path, smtp):
    "The REST update dials ARTIST_PHONE; the fake artist does not answer; Twilio asks /handoff, which brings the caller back to leave a message."
    box, port = smtp
    app, rest, base = await line_with(aiohttp_server, tmp_path, ['can i talk to jason', 'tell him i loved the show'], port, artist_phone=ARTIST)
    first = await simulate_call(base, [Step(pcm=voiced(0.8, 0), pause_s=0.3)], auth_token=TOKEN, speed=0)
    assert first.ended_by == 'server'  # the hotline let go of the stream: Twilio dials now
    moved = [m for m in rest[TWILIO_SENT] if m['kind'] == 'call' and 'Twiml' in m]
    assert len(moved) == 1 and f'timeout="20">{ARTIST}</Dial>' in moved[0]['Twiml'] and moved[0]['CallSid'] == first.call_sid
    for _ in range(1500):  # the fake artist's phone rings, then the dial's action is asked what next
        if (done := rest[TWILIO_DIALED].get(first.call_sid)) is not None and done.done(): break
        await asyncio.sleep(0.02)
    twiml = rest[TWILIO_DIALED][first.call_sid].result()
    assert '<Parameter name="then" value="message"' in twiml, twiml
    back = await simulate_call(base, [Step(pcm=voiced(1.2, 1), pause_s=2.5)], auth_token=TOKEN, twiml=twiml, call_sid=first.call_sid, account_sid=ACCT)
    await settled(app)
    call = await app[STORE].get_call(first.call_sid)
    kinds = [e['kind'] for e in call['events']]
    assert [e['detail'] for e in call['events'] if e['kind'] == 'tool'] == [{'name': 'talk_to_artist', 'by': 'model', 'rang': True}]
    assert 'handoff' in kinds and [e['detail']['status'] for e in call['events'] if e['kind'] == 'handoff_ended'] == ['no-answer']
    assert [e['detail']['text'] for e in call['events'] if e['kind'] == 'message'] == ['tell him i loved the show']
    said = [t['reply_text'] for t in call['turns']]
    assert JASON.handoff in said and JASON.no_answer in said, said
    assert len({t['idx'] for t in call['turns']}) == len(call['turns'])  # the second stream carried on the turn numbers
    assert any('tell him i loved the show' in t for t in texts(rest, OWNER)) and any('tell him i loved the show' in m for m in box.got)


async def test_outside_the_artists_hours_a_message_is_taken(aiohttp_server, tmp_path, smtp):
    "Key 0 asks for the artist; a persona whose artist never takes calls says so and takes a message, and nothing is dialed."
    import dataclasses
    box, port = smtp
    away = dataclasses.replace(JASON, hours='mon 00:00-00:01', timezone='Pacific/Kiritimati')
    rest = fake_twilio_api(ACCT, TOKEN)
    api = str((await aiohttp_server(rest)).make_url('')).rstrip('/')
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3', store_spill='', twilio_account_sid=ACCT, twilio_auth_token=TOKEN,
                              twilio_api_base=api, artist_phone=ARTIST, call=CallSettings(message_end_s=1.0)), persona=away,
                     providers=Providers(EchoSTT(['it is about the commission']), ScriptedBrain(away), ToneTTS()))
    base = str((await aiohttp_server(app)).make_url('')).rstrip('/')
    hush = np.zeros(1600, np.int16)
    sim = await simulate_call(base, [Step(pcm=hush, dtmf='0', pause_s=0.3), Step(pcm=voiced(1.0, 2), pause_s=2.5)], auth_token=TOKEN)
    await settled(app)
    call = await app[STORE].get_call(sim.call_sid)
    assert [e['detail'] for e in call['events'] if e['kind'] == 'tool'] == [{'name': 'talk_to_artist', 'by': 'key', 'rang': False, 'why': "outside the artist's hours"}]
    assert not [m for m in rest[TWILIO_SENT] if m['kind'] == 'call' and 'Twiml' in m]
    assert [e['detail'] for e in call['events'] if e['kind'] == 'message'] == [{'text': 'it is about the commission', 'sent': []}]  # kept on the calls page


async def test_text_me_the_link_and_goodbye(aiohttp_server, tmp_path, smtp):
    "The link goes to the caller's number; 'bye' says the farewell and the hotline hangs up (REST, status completed)."
    box, port = smtp
    app, rest, base = await line_with(aiohttp_server, tmp_path, ['can you text me the link', 'okay bye'], port)
    sim = await simulate_call(base, [Step(pcm=voiced(0.8, 0), pause_s=0.3), Step(pcm=voiced(0.6, 1), pause_s=0.3)], auth_token=TOKEN,
                              speed=0, from_='+15551239876')
    await settled(app)
    call = await app[STORE].get_call(sim.call_sid)
    assert texts(rest, '+15551239876') == [JASON.links]
    assert [e['detail']['name'] for e in call['events'] if e['kind'] == 'tool'] == ['text_link', 'end_call']
    assert call['outcome'] == 'caller said goodbye' and JASON.link_sent in [t['reply_text'] for t in call['turns']]
    assert any(m.get('Status') == 'completed' for m in rest[TWILIO_SENT] if m['kind'] == 'call')


async def test_a_tool_that_fails_is_said(aiohttp_server, tmp_path):
    "With no Twilio number to text from, 'text me the link' says the persona's tool_failed line, never nothing."
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/c.sqlite3', store_spill=''),
                     providers=Providers(EchoSTT(['can you text me the link']), ScriptedBrain(JASON), ToneTTS()))
    base = str((await aiohttp_server(app)).make_url('')).rstrip('/')
    sim = await simulate_call(base, [Step(pcm=voiced(0.8, 0), pause_s=0.3)], speed=0)
    await settled(app)
    call = await app[STORE].get_call(sim.call_sid)
    assert JASON.tool_failed in [t['reply_text'] for t in call['turns']]
    (tool,) = [e['detail'] for e in call['events'] if e['kind'] == 'tool']
    assert tool['name'] == 'text_link' and 'NOTIFY_SMS_FROM' in tool['error']
