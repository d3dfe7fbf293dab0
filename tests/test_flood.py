"A flood of half-sent webhook bodies against a server whose descriptor limit is 1,024: the live call keeps talking, /health answers."
import asyncio, json, os, signal, socket, subprocess, sys
import aiohttp
import pytest

from artist_hotline.simulate import dial
from conftest import voiced, wait_health

SERVER = '''
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
from artist_hotline.providers import CannedLLM, EchoSTT, Providers, ToneTTS
from artist_hotline.server import create_app, serve
from artist_hotline.settings import Settings
s = Settings.from_env()
serve(s, create_app(s, providers=Providers(EchoSTT(['hello there'] * 9), CannedLLM('Nice. Go on.'), ToneTTS())))
'''
HALF = (b'POST /voice HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n'
        b'Content-Length: 1000\r\n\r\nCallSid=CA')  # and the other 990 bytes never come


async def health(base):
    "GET /health on a new connection (a kept-alive one would not need the server to accept)."
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        async with session.get(f'{base}/health', timeout=aiohttp.ClientTimeout(total=5)) as r: return r.status, await r.json()


async def test_half_sent_bodies_over_the_descriptor_limit_leave_the_call_talking(tmp_path):
    with socket.socket() as sk:
        sk.bind(('127.0.0.1', 0)); port = sk.getsockname()[1]
    env = dict(os.environ, HOST='127.0.0.1', PORT=str(port), DATABASE_URL=f'sqlite:///{tmp_path}/calls.sqlite3',
               STORE_SPILL=str(tmp_path / 'pending.jsonl'), WEBHOOK_TIMEOUT_S='60', INSIGHTS='false')
    proc = subprocess.Popen([sys.executable, '-c', SERVER], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base, held, heard = f'http://127.0.0.1:{port}', [], None
    try:
        if True:
            await asyncio.to_thread(wait_health, port, proc)
            stream = await dial(base, speed=0)
            await stream.wait_reply(0, 10, 0.3, 30)

            async def half():
                try:
                    r, w = await asyncio.open_connection('127.0.0.1', port)
                    w.write(HALF); await w.drain(); held.append(w)
                except OSError: pass  # refused at the door: the budget at work
            await asyncio.gather(*(half() for _ in range(1100)))
            for _ in range(40):  # the refusals of the first burst close their connections within a second or two
                try: status, h = await health(base); break
                except (aiohttp.ClientError, asyncio.TimeoutError): await asyncio.sleep(0.25)
            else: raise AssertionError('/health did not answer during the flood')
            assert status == 200 and h['bodies_refused'] + h['connections_refused'] > 0, h
            t = await stream.say(voiced(0.8))
            heard = await stream.wait_sound(t + 6400, 30)  # the call in progress answers (30 s: a cap for a machine busy elsewhere, not a time asserted)
            await stream.stop()
    finally:
        for w in held: w.close()
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    assert heard is not None, f'the call got no answer after the flood; the server said:\n{out[-3000:]}'
    assert len(held) > 900  # the flood was there: most of it connected and sent its half body
    assert proc.returncode == 0, out[-3000:]
    assert 'Too many open files' not in out and 'Traceback' not in out, out[-3000:]


async def test_a_draining_server_still_answers_the_webhook(tmp_path):
    "After SIGTERM, while its call says goodbye, a single server answers /ready with 503 and /voice with the busy line."
    with socket.socket() as sk:
        sk.bind(('127.0.0.1', 0)); port = sk.getsockname()[1]
    env = dict(os.environ, HOST='127.0.0.1', PORT=str(port), DATABASE_URL=f'sqlite:///{tmp_path}/calls.sqlite3',
               STORE_SPILL=str(tmp_path / 'pending.jsonl'), INSIGHTS='false', SHUTDOWN_TIMEOUT_S='10')
    proc = subprocess.Popen([sys.executable, '-c', SERVER], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base, signalled = f'http://127.0.0.1:{port}', False
    try:
        await asyncio.to_thread(wait_health, port, proc)
        stream = await dial(base, speed=1)  # in real time: the goodbye takes as long as it plays
        await stream.wait_reply(0, 10, 0.3, 30)
        line = asyncio.create_task(stream.fill(30.0, waiting=True))
        proc.send_signal(signal.SIGTERM); signalled = True
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for _ in range(200):
                async with session.get(f'{base}/ready') as r:
                    if r.status == 503: break
                await asyncio.sleep(0.01)
            form = {'CallSid': 'CA' + '7' * 32, 'AccountSid': 'AC' + '0' * 32, 'From': '+15551230007', 'To': '+15550000000'}
            async with session.post(f'{base}/voice', data=form) as r:
                status, twiml = r.status, await r.text()
        assert status == 200 and '<Hangup' in twiml and '<Stream' not in twiml, twiml
        await asyncio.gather(line, return_exceptions=True)
        await stream.close()
    finally:
        if not signalled: proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    from artist_hotline.store import Store
    async with Store(env['DATABASE_URL']) as store:
        kept = await store.get_call(stream.call_sid)
    goodbye = kept['turns'][-1]
    assert goodbye['kind'] == 'goodbye' and goodbye['heard_text'] == goodbye['reply_text'], goodbye  # its marks came back before the socket closed
