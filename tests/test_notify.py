"Call-summary texts through the twilio client, against a local fake of Twilio's REST API."
import asyncio, base64

import pytest
from aiohttp import web
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from artist_hotline.notify import TWILIO_SENT, NotifyError, fake_twilio_api, send_call_summary_sms, sms_body

ACCT, TOKEN = 'AC' + 'f' * 32, 'secret-token'
TO, FROM = '+15557654321', '+15550001111'


@pytest.fixture
async def fake(aiohttp_server):
    app = fake_twilio_api(ACCT, TOKEN)
    server = await aiohttp_server(app, host='127.0.0.1')
    return app, str(server.make_url('')).rstrip('/')


async def test_summary_is_texted(fake):
    app, base = fake
    sid = await send_call_summary_sms(ACCT, TOKEN, TO, FROM, '+15551230001', 305.2, 'They said: "i make pots".', api_base=base)
    assert sid.startswith('SM') and len(sid) == 34
    (sent,) = app[TWILIO_SENT]
    assert (sent['kind'], sent['To'], sent['From']) == ('message', TO, FROM)
    assert sent['Body'] == 'Hotline call from +15551230001, 5 min 5 s: They said: "i make pots".'


async def test_failures_raise_one_clear_error(fake, aiohttp_server):
    app, base = fake
    with pytest.raises(NotifyError, match=r'HTTP 401, error 20003'):
        await send_call_summary_sms(ACCT, 'wrong', TO, FROM, '+1555', 10, 'x', api_base=base)
    with pytest.raises(NotifyError, match=r'HTTP 401, error 20003'):
        await send_call_summary_sms('AC' + '1' * 32, TOKEN, TO, FROM, '+1555', 10, 'x', api_base=base)
    with pytest.raises(NotifyError, match=r'error 21211'):
        await send_call_summary_sms(ACCT, TOKEN, 'nobody', FROM, '+1555', 10, 'x', api_base=base)
    with pytest.raises(NotifyError, match='not sent'):
        await send_call_summary_sms(ACCT, TOKEN, TO, FROM, '+1555', 10, 'x', api_base='http://127.0.0.1:9')
    with pytest.raises(NotifyError, match='all needed'):
        await send_call_summary_sms(ACCT, TOKEN, TO, '', '+1555', 10, 'x', api_base=base)

    async def hang(request):
        await asyncio.sleep(30)
        return web.Response()
    slow = web.Application(); slow.router.add_post('/2010-04-01/Accounts/{sid}/Messages.json', hang)
    server = await aiohttp_server(slow, host='127.0.0.1')
    with pytest.raises(NotifyError, match='not sent'):
        await send_call_summary_sms(ACCT, TOKEN, TO, FROM, '+1555', 10, 'x', api_base=str(server.make_url('')).rstrip('/'), timeout_s=0.5)


async def test_fake_checks_basic_auth_and_answers_hangups(fake, aiohttp_client):
    app, base = fake
    client = Client(ACCT, TOKEN, http_client=AsyncTwilioHttpClient())
    client.api.base_url = base
    try:
        call = await client.calls('CA' + '2' * 32).update_async(status='completed')
        assert call.status == 'completed'
    finally: await client.http_client.close()
    assert app[TWILIO_SENT][-1] == {'kind': 'call', 'CallSid': 'CA' + '2' * 32, 'Status': 'completed'}
    raw = await aiohttp_client(app)
    r = await raw.post(f'/2010-04-01/Accounts/{ACCT}/Messages.json', data={'To': TO, 'Body': 'x'})
    assert r.status == 401 and (await r.json())['code'] == 20003
    auth = 'Basic ' + base64.b64encode(f'{ACCT}:{TOKEN}'.encode()).decode()
    r = await raw.post(f'/2010-04-01/Accounts/{ACCT}/Messages.json', data={'To': TO, 'From': FROM}, headers={'Authorization': auth})
    assert r.status == 400 and (await r.json())['code'] == 21602


def test_body_is_bounded():
    assert sms_body('+1555', 3, '  a\n b  ') == 'Hotline call from +1555, 3 s: a b'
    long = sms_body('+1555', 3600, 'word ' * 1000, max_chars=160)
    assert len(long) <= 160 and long.endswith('…') and long.startswith('Hotline call from +1555, 60 min 0 s: word')
