"A full disk under a running server: /ready says so, the shutdown spills what the database could not take, the restart writes it."
import asyncio, errno, subprocess
import pytest

from artist_hotline.providers import CannedLLM, EchoSTT, Providers, ToneTTS
from artist_hotline.server import FINISHED, STORE, SINK, create_app
from artist_hotline.settings import Settings
from artist_hotline.simulate import dial
from conftest import voiced


@pytest.fixture
def small_disk(tmp_path):
    "A 16 MB filesystem of its own (tmpfs), so that it can be filled without filling the machine's."
    d = tmp_path / 'disk'; d.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', str(d)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f'cannot mount a small filesystem here (needs root): {r.stderr.strip()}')
    yield d
    subprocess.run(['umount', '-l', str(d)], check=True)


def fill(path):
    "Write zeros to `path` until the disk refuses (ENOSPC)."
    with open(path, 'wb', buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True: f.write(b'\0' * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC


async def test_disk_full_then_stop_keeps_every_finished_turn(small_disk, aiohttp_server, aiohttp_client):
    s = Settings(database_url=f'sqlite:///{small_disk}/calls.sqlite3', store_spill=str(small_disk / 'pending.jsonl'),
                 store_spill_reserve_mb=2, min_free_mb=4, record_calls=True, recordings_dir=str(small_disk / 'rec'),
                 insights=False, shutdown_timeout_s=1)
    fakes = lambda: Providers(EchoSTT(['hello there', 'the disk is full', 'still here']), CannedLLM('Nice. Go on.'), ToneTTS())
    app = create_app(s, providers=fakes())
    server = await aiohttp_server(app)
    client = await aiohttp_client(server)
    assert (small_disk / 'pending.jsonl.reserve').stat().st_size == 2 << 20 and (await client.get('/ready')).status == 200
    stream = await dial(str(server.make_url('')).rstrip('/'), speed=0)
    await stream.wait_reply(0, 10, 0.3, 30)
    t = await stream.say(voiced(0.8)); await stream.wait_reply(t, 10, 0.3, 30)
    assert await app[SINK].flush(5)
    fill(small_disk / 'filler')  # the disk is full from here on
    for seed in (1, 2):
        t = await stream.say(voiced(0.8, seed)); await stream.wait_reply(t, 10, 0.3, 30)
    ready = await client.get('/ready')
    reasons = (await ready.json())['reasons']
    assert ready.status == 503 and any('below MIN_FREE_MB=4' in r for r in reasons), reasons
    await stream.stop()
    for _ in range(200):
        if app[FINISHED]: break
        await asyncio.sleep(0.05)
    call = app[FINISHED][-1]
    said = [t.caller_text for t in call.turns if t.kind == 'reply']
    assert said == ['hello there', 'the disk is full', 'still here']
    assert app[SINK].pending > 0  # the database took none of the last turns
    await client.close(); await server.close()  # what SIGTERM does: drain, flush for the deadline, spill
    assert (small_disk / 'pending.jsonl').stat().st_size > 0 and not (small_disk / 'rec').exists()  # no empty recording

    (small_disk / 'filler').unlink()
    again = await aiohttp_server(create_app(s, providers=fakes()))
    restarted = again.app
    assert await restarted[SINK].flush(5) and not (small_disk / 'pending.jsonl').exists()
    kept = await restarted[STORE].get_call(call.sid)
    assert [t['caller_text'] for t in kept['turns'] if t['kind'] == 'reply'] == said
    assert all(t['outcome'] != 'pending' for t in kept['turns']) and kept['ended_at'] is not None
    await again.close()


async def test_a_recording_that_cannot_be_written_leaves_no_file(small_disk):
    "A full disk (and no MIN_FREE_MB guard): the WAV fails mid-write and is removed, the call's end is kept."
    from artist_hotline.aftercall import wind_up
    from artist_hotline.call import Call
    from artist_hotline.persona import load_persona
    from artist_hotline.records import CallSink
    from artist_hotline.twilio import Start

    class Ends(CallSink):
        def __init__(self): self.got = []
        async def event(self, call, kind, detail): self.got.append(kind)
        async def end_call(self, sid, **kw): self.got.append(('end', kw['recording']))
    call = Call(Start('MZ1', 'CA' + '3' * 32), Providers(EchoSTT(), CannedLLM('Blue.'), ToneTTS()), load_persona(), send=None, record=True)
    for _ in range(500): call.recorder.heard(b'\xff' * 160)  # 10 s of audio: a WAV of about 320 kB
    (small_disk / 'rec').mkdir()
    fill(small_disk / 'filler')
    sink = Ends()
    await wind_up(call, asyncio.create_task(asyncio.sleep(0)), 'caller hung up',
                  Settings(recordings_dir=str(small_disk / 'rec'), min_free_mb=0, insights=False), sink)
    assert sink.got == ['recording_failed', ('end', None)] and list((small_disk / 'rec').iterdir()) == []


async def test_a_removed_database_folder_fails_ready(tmp_path, aiohttp_server, aiohttp_client):
    (tmp_path / 'db').mkdir()
    s = Settings(database_url=f'sqlite:///{tmp_path}/db/calls.sqlite3', store_spill=str(tmp_path / 'pending.jsonl'))
    client = await aiohttp_client(await aiohttp_server(create_app(s, providers=Providers(EchoSTT(), CannedLLM(), ToneTTS()))))
    assert (await client.get('/ready')).status == 200
    for f in (tmp_path / 'db').iterdir(): f.unlink()
    (tmp_path / 'db').rmdir()  # the store's file is unlinked while the server holds it open
    r = await client.get('/ready')
    assert r.status == 503 and any('is gone' in why for why in (await r.json())['reasons'])
    health = await (await client.get('/health')).json()
    assert health['status'] == 'degraded' and any('is gone' in p for p in health['problems'])
