"The call browser: token guard, JSON API, recordings, and the HTML page as headless Chromium renders it."
import asyncio, io, os, re, shutil, tempfile
from datetime import timedelta
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web

from artist_hotline.audio import write_wav
from artist_hotline.records import TurnRecord
from artist_hotline.callsweb import CALLS_WEB, add_calls_routes, calls_html
from artist_hotline.store import Store, utcnow

TOKEN = 'tok-3f9a'
from conftest import BROWSER as CHROMIUM


async def fill(store: Store, folder: Path, n: int = 1) -> list[str]:
    "Calls CA0..CA{n-1} (newest last), the newest with a stereo recording, a reply, a barge-in and an event."
    t0 = utcnow() - timedelta(hours=1)
    sids = []
    for i in range(n):
        sid = f'CA{i:032x}'
        await store.start_call(sid, f'+1555123{i:04d}', 'Synthetic Jason', t0 + timedelta(minutes=i), 'MZ1')
        await store.write_turn(sid, TurnRecord(1, kind='greeting', reply_text='Hi.', heard_text='Hi.', outcome='replied', first_sent=0.1))
        await store.write_turn(sid, TurnRecord(2, caller_text=f'hello number {i}', reply_text='Nice to hear you.', heard_text='Nice to hear you.',
                                               outcome='replied', speech_start=2, speech_end=3, endpoint=3.4, transcript=3.9, first_token=4.2,
                                               first_sentence=4.25, first_audio=4.5, first_sent=4.51, stt='openai:whisper-1'))
        await store.write_turn(sid, TurnRecord(3, caller_text='wait <b>stop</b>', reply_text='Sure, so anyway.', heard_text='Sure,',
                                               interrupted=True, outcome='barge_in', speech_start=7, speech_end=8, endpoint=8.4, transcript=8.8,
                                               first_token=9.1, first_audio=9.4, first_sent=9.41))
        await store.add_event(sid, 'barge_in', {'turns': [3]}, t=10.2)
        rec = None
        if i == n - 1:
            tone = (3000 * np.sin(2 * np.pi * 300 * np.arange(8000) / 8000)).astype(np.int16)
            rec = str(write_wav(folder / f'{sid}.wav', np.stack([tone, np.zeros_like(tone)], axis=1), 8000))
        await store.end_call(sid, t0 + timedelta(minutes=i, seconds=42), 'caller hung up', summary=f'They said hello {i}.', recording=rec)
        sids.append(sid)
    return sids


@pytest.fixture
async def store(tmp_path):
    s = await Store(f'sqlite:///{tmp_path}/calls.sqlite3').open()
    yield s
    await s.close()


def app_with(store, token=TOKEN, **kw):
    app = web.Application()
    add_calls_routes(app, store, token, **kw)
    return app


async def test_closed_without_a_token_and_guarded_with_one(store, tmp_path, aiohttp_client):
    (sid,) = await fill(store, tmp_path)
    api = ['/calls', f'/calls/{sid}', f'/calls/{sid}/recording.wav']
    closed = await aiohttp_client(app_with(store, token=''))
    assert [(await closed.get(p)).status for p in api + ['/calls/ui', '/calls/login']] == [404] * 5
    client = await aiohttp_client(app_with(store))
    for p in api:
        r = await client.get(p)
        assert r.status == 401 and r.headers['WWW-Authenticate'].startswith('Bearer')
        assert (await client.get(p, params={'token': TOKEN})).status == 401  # never a token in the URL of the API
        assert (await client.get(p, headers={'Authorization': 'Bearer nope'})).status == 401
        ok = await client.get(p, headers={'Authorization': f'Bearer {TOKEN}'})
        assert ok.status == 200 and ok.headers['Cache-Control'] == 'no-store' and ok.headers['Referrer-Policy'] == 'no-referrer'
        assert ok.headers['X-Frame-Options'] == 'DENY'
    form = await client.get('/calls/ui')
    assert form.status == 401 and 'name="token"' in await form.text() and sid not in await form.text()


async def test_sign_in_form_sets_a_cookie_that_opens_everything(store, tmp_path, aiohttp_client):
    (sid,) = await fill(store, tmp_path)
    client = await aiohttp_client(app_with(store))
    assert (await client.post('/calls/login', data={'token': 'nope'}, allow_redirects=False)).status == 401
    r = await client.post('/calls/login', data={'token': TOKEN}, allow_redirects=False)
    assert r.status == 303 and r.headers['Location'] == '/calls/ui'
    cookie = r.headers['Set-Cookie']
    assert all(a in cookie for a in ('HttpOnly', 'SameSite=Strict', 'Path=/calls')) and TOKEN not in cookie and 'Secure' not in cookie
    page = await client.get('/calls/ui')
    html = await page.text()
    assert page.status == 200 and f'id="call-{sid}"' in html and 'token' not in re.sub(r'first[_ ]token', '', html)
    assert (await client.get(f'/calls/{sid}/recording.wav')).status == 200 and (await client.get('/calls')).status == 200
    r = await client.post('/calls/logout', allow_redirects=False)
    assert r.status == 303 and (await client.get('/calls')).status == 401


async def test_a_link_with_the_token_is_swapped_for_the_cookie(store, tmp_path, aiohttp_client):
    await fill(store, tmp_path)
    client = await aiohttp_client(app_with(store))
    r = await client.get('/calls/ui', params={'token': TOKEN, 'limit': 5}, allow_redirects=False)
    assert r.status == 303 and r.headers['Location'] == '/calls/ui?limit=5' and 'calls_session=' in r.headers['Set-Cookie']
    client.session.cookie_jar.clear()
    secure = await client.get('/calls/ui', params={'token': TOKEN}, headers={'X-Forwarded-Proto': 'https'}, allow_redirects=False)
    assert 'Secure' in secure.headers['Set-Cookie']
    assert (await client.get('/calls/ui', params={'token': 'nope'})).status == 401


async def test_json_list_pages_newest_first(store, tmp_path, aiohttp_client):
    sids = await fill(store, tmp_path, 5)
    client = await aiohttp_client(app_with(store))
    auth = {'Authorization': f'Bearer {TOKEN}'}
    page = await (await client.get('/calls?limit=2', headers=auth)).json()
    assert [c['sid'] for c in page['calls']] == sids[::-1][:2] and page['next'] == '/calls?limit=2&offset=2'
    page = await (await client.get(page['next'], headers=auth)).json()
    assert [c['sid'] for c in page['calls']] == sids[::-1][2:4]
    last = await (await client.get('/calls?limit=2&offset=4', headers=auth)).json()
    assert [c['sid'] for c in last['calls']] == [sids[0]] and last['next'] is None
    c = last['calls'][0]
    assert (c['caller'], c['n_turns'], c['duration_s'], c['outcome']) == ('+15551230000', 3, 42.0, 'caller hung up')
    assert c['started_at'].endswith('+00:00')
    assert (await client.get('/calls?limit=abc', headers=auth)).status == 400
    assert len((await (await client.get('/calls?limit=100000', headers=auth)).json())['calls']) == 5


async def test_one_call_with_transcript_timings_and_events(store, tmp_path, aiohttp_client):
    (sid,) = await fill(store, tmp_path)
    client = await aiohttp_client(app_with(store))
    auth = {'Authorization': f'Bearer {TOKEN}'}
    c = await (await client.get(f'/calls/{sid}', headers=auth)).json()
    assert [t['caller_text'] for t in c['turns']] == ['', 'hello number 0', 'wait <b>stop</b>']
    lat = c['turns'][1]['latency_ms']
    assert lat == dict(hangover=400.0, stt=500.0, first_token=300.0, first_audio=300.0, final=None, transport=10.0, total=1510.0)
    assert c['turns'][1]['stt'] == 'openai:whisper-1' and c['turns'][2]['interrupted'] is True
    assert [(e['kind'], e['detail'], e['t']) for e in c['events']] == [('barge_in', {'turns': [3]}, 10.2)]
    assert (await client.get('/calls/CAnothere', headers=auth)).status == 404


async def test_recording_streams_the_stereo_wav(store, tmp_path, aiohttp_client):
    old, new = await fill(store, tmp_path, 2)
    client = await aiohttp_client(app_with(store), headers={'Authorization': f'Bearer {TOKEN}'})
    r = await client.get(f'/calls/{new}/recording.wav')
    assert r.status == 200 and r.headers['Content-Type'] == 'audio/wav'
    x, sr = sf.read(io.BytesIO(await r.read()), dtype='int16')
    assert (sr, x.shape) == (8000, (8000, 2)) and np.abs(x[:, 0]).max() > 1000 and np.abs(x[:, 1]).max() == 0
    r = await client.get(f'/calls/{new}/recording.wav', headers={'Range': 'bytes=100-199'})
    assert r.status == 206 and len(await r.read()) == 100  # players can seek
    assert (await client.get(f'/calls/{old}/recording.wav')).status == 404  # none stored
    await store.update_call(old, recording=str(tmp_path / 'gone.wav'))
    assert (await client.get(f'/calls/{old}/recording.wav')).status == 404  # file missing
    assert (await client.get('/calls/..%2F..%2Fetc%2Fpasswd/recording.wav')).status == 404  # not a sid
    elsewhere = await aiohttp_client(app_with(store, recordings_dir=str(tmp_path / 'recordings')), headers={'Authorization': f'Bearer {TOKEN}'})
    assert (await elsewhere.get(f'/calls/{new}/recording.wav')).status == 404  # outside the folder


async def test_store_kept_under_an_app_key_and_opened_at_startup(tmp_path, aiohttp_client):
    key = web.AppKey('store', Store)
    app = web.Application()
    async def open_store(app):
        app[key] = await Store(f'sqlite:///{tmp_path}/k.sqlite3').open()
        await fill(app[key], tmp_path)
        yield
        await app[key].close()
    app.cleanup_ctx.append(open_store)
    cfg = add_calls_routes(app, key, TOKEN)
    assert app[CALLS_WEB] is cfg
    client = await aiohttp_client(app)
    auth = {'Authorization': f'Bearer {TOKEN}'}
    assert len((await (await client.get('/calls', headers=auth)).json())['calls']) == 1
    getter = web.Application()
    add_calls_routes(getter, lambda a: app[key], TOKEN, prefix='/admin/calls/')
    client2 = await aiohttp_client(getter)
    assert (await client2.get('/admin/calls', headers=auth)).status == 200


async def test_page_escapes_and_links(store, tmp_path, aiohttp_client):
    sids = await fill(store, tmp_path, 3)
    client = await aiohttp_client(app_with(store), headers={'Authorization': f'Bearer {TOKEN}'})
    r = await client.get('/calls/ui', params={'limit': 2})
    html = await r.text()
    csp = r.headers['Content-Security-Policy']
    assert r.content_type == 'text/html' and "default-src 'none'" in csp and "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    assert '<script src="/calls/ui.js"></script>' in html and '<script>' not in html  # no inline script
    assert 'document.body.dataset.ready' in await (await client.get('/calls/ui.js')).text()
    assert 'wait &lt;b&gt;stop&lt;/b&gt;' in html and '<b>stop</b>' not in html
    assert f'id="call-{sids[2]}"' in html and f'id="call-{sids[0]}"' not in html
    assert unescape(re.search(r'href="([^"]*)">older', html).group(1)) == '/calls/ui?limit=2&offset=2'
    assert calls_html([]).count('No calls yet') == 1


async def chromium(url: str, *args: str, timeout: float = 90) -> str:
    "Headless Chromium on `url`; returns what it prints (the DOM with --dump-dom)."
    ud = tempfile.mkdtemp(prefix='chromium-')
    try:
        p = await asyncio.create_subprocess_exec(
            CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync', f'--user-data-dir={ud}',
            *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try: out, err = await asyncio.wait_for(p.communicate(), timeout)
        except asyncio.TimeoutError:
            p.kill(); await p.wait(); raise
        assert p.returncode == 0, err.decode()[-2000:]
        return out.decode()
    finally: shutil.rmtree(ud, ignore_errors=True)


async def test_page_in_headless_chromium(browser, store, tmp_path, aiohttp_server):
    (sid,) = await fill(store, tmp_path)
    server = await aiohttp_server(app_with(store), host='127.0.0.1')
    base = str(server.make_url('')).rstrip('/')
    dom = await chromium(f'{base}/calls/ui?token={TOKEN}', '--dump-dom')
    assert 'data-ready="1"' in dom  # the page's script ran under its CSP (the token link was swapped for the cookie)
    assert f'id="call-{sid}"' in dom and '+15551230000' in dom and 'hello number 0' in dom and '[cut off by the caller]' in dom
    audio = re.findall(r'<audio[^>]*src="([^"]+)"', dom)
    assert [unescape(a) for a in audio] == [f'/calls/{sid}/recording.wav']
    assert dom.count('class="seg ') == 10  # two replies, five stages each
    shot = tmp_path / 'ui.png'
    await chromium(f'{base}/calls/ui?token={TOKEN}', f'--screenshot={shot}', '--window-size=1000,800')
    assert shot.stat().st_size > 10_000
    denied = await chromium(f'{base}/calls/ui?token=wrong', '--dump-dom')
    assert sid not in denied
