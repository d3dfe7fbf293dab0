"Blocked numbers: kept in the store (SQLite and PostgreSQL), set by `artist-hotline block` or the API, rejected with `<Reject>` by every replica before any engine runs, also while the database stalls."
import asyncio, os, subprocess, sys, time
from datetime import timedelta

import aiohttp
import pytest

from artist_hotline.settings import ENV_NAMES
from artist_hotline.simulate import voice_params
from artist_hotline.store import Store, blocks, utcnow
from conftest import FlakyProxy
from test_replicas import cloud, post_voice, replicas  # noqa: F401 (fixtures: two `serve` replicas on one PostgreSQL schema)

CLI = [sys.executable, '-c', 'import sys; from artist_hotline.cli import main; sys.exit(main())']
REJECT = '<?xml version="1.0" encoding="UTF-8"?><Response><Reject /></Response>'


async def test_blocks_in_the_store(db_url):
    async with Store(db_url) as s:
        until = await s.block('+1 (555) 123-0042', 2, 'abusive')
        await s.block('sip:+15551230042@pbx.example.com', 3, 'again')  # the same caller: the block is replaced
        assert [(b['caller'], b['reason']) for b in await s.blocked()] == [('+15551230042', 'again')]
        assert (await s.blocked())[0]['until'] - until > timedelta(minutes=59)
        with pytest.raises(ValueError, match='longer than 0 hours'): await s.block('+15550000001', 0)
        with pytest.raises(ValueError, match='every anonymous caller'): await s.block('Restricted', 1)
        with pytest.raises(ValueError, match='every anonymous caller'): await s.forget('')
        await s.block('+15550000002', 1)
        await s._tx(lambda c: c.execute(blocks.update().where(blocks.c.caller_key == '+15550000002').values(until=utcnow() - timedelta(seconds=1))))
        assert [b['caller'] for b in await s.blocked()] == ['+15551230042']  # one that ran out is not in force
        await s.heartbeat('A')
        assert len(await s._tx(lambda c: c.execute(blocks.select()).all())) == 1  # and the heartbeat deleted it
        assert (await s.unblock('tel:+1-555-123-0042'), await s.unblock('+15551230042')) == (True, False)


def test_block_command(tmp_path):
    db = f'sqlite:///{tmp_path}/calls.sqlite3'
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | {'BLOCK_HOURS': '5'}
    run = lambda *args: subprocess.run(CLI + ['block', *args, '--db', db], env=env, capture_output=True, text=True, timeout=60)
    r = run('+1 555 123 0042', '--reason', 'abusive')
    assert r.returncode == 0 and r.stdout.startswith('+1 555 123 0042 blocked until '), r.stderr
    listed = run().stdout.split()
    assert listed[0] == '+15551230042' and listed[-1] == 'abusive', listed
    assert 'block lifted' in run('+15551230042', '--lift').stdout and run().stdout == ''
    r = run('+15551230042', '--hours', '0')
    assert r.returncode == 1 and 'longer than 0 hours' in r.stderr


async def test_every_replica_rejects_a_blocked_number_even_with_the_database_stalled(replicas, pg_url):
    "A number blocked through one replica's API is rejected by both; a stalled database changes nothing; lifted, it is taken again."
    proxy = FlakyProxy(5432)
    port = await proxy.start()
    try:
        a, b = await replicas(db=pg_url.replace('127.0.0.1:5432', f'127.0.0.1:{port}'), CALLS_UI_TOKEN='ui', BLOCK_REFRESH_S='0.2')
        async with aiohttp.ClientSession(headers={'Authorization': 'Bearer ui'}) as http:
            r = await http.post(a.base + '/blocks', json={'number': '+15556660001', 'hours': 1, 'reason': 'abusive'})
            assert r.status == 201, await r.text()
            assert (await http.post(a.base + '/blocks', json={'number': ''})).status == 400
        for _ in range(100):  # B reads the blocks every 200 ms
            if (await b.health())['blocked_numbers'] == 1: break
            await asyncio.sleep(0.1)
        proxy.stall()  # the database stops answering
        t0 = time.monotonic()
        answers = await asyncio.gather(*[post_voice(r, voice_params(f'CA{i:032x}', 'AC' + '1' * 32, '+1 555 666 0001')) for i, r in enumerate((a, b))])
        took = time.monotonic() - t0
        assert answers == [(200, REJECT)] * 2, answers
        print(f'two blocked calls rejected in {took * 1000:.0f} ms with the database stalled')
        assert [(await r.health())['blocked_calls'] for r in (a, b)] == [1, 1]
        proxy.up()
        async with aiohttp.ClientSession(headers={'Authorization': 'Bearer ui'}) as http:
            assert (await http.delete(a.base + '/blocks/+15556660001')).status == 200
        for _ in range(100):
            if (await b.health())['blocked_numbers'] == 0: break
            await asyncio.sleep(0.1)
        status, twiml = await post_voice(b, voice_params('CA' + 'f' * 32, 'AC' + '1' * 32, '+15556660001'))
        assert status == 200 and '<Connect' in twiml
    finally:
        proxy.up(); await proxy.close()


async def test_an_abusive_caller_is_warned_then_hung_up_on_and_blocked(aiohttp_server, tmp_path):
    "The first abusive turn gets the persona's warning, the second its goodbye and a hang-up; the number is then rejected."
    from artist_hotline.persona import load_persona
    from artist_hotline.providers import CannedLLM, EchoSTT, Providers, ToneTTS
    from artist_hotline.server import BLOCKED, STORE, create_app
    from artist_hotline.settings import Settings
    from artist_hotline.simulate import Step, simulate_call
    from conftest import voiced
    from test_calls_kept import settled
    texts = ['you stupid machine, shut up', 'fuck you', 'hello again']
    app = create_app(Settings(database_url=f'sqlite:///{tmp_path}/calls.sqlite3', store_spill=''),
                     providers=Providers(EchoSTT(texts), CannedLLM('Boats are wonderful.'), ToneTTS()))
    base = str((await aiohttp_server(app)).make_url('')).rstrip('/')
    sim = await simulate_call(base, [Step(pcm=voiced(0.8, i), pause_s=0.2) for i in range(3)], speed=0, from_='+15554440001')
    await settled(app)
    call = await app[STORE].get_call(sim.call_sid)
    persona = load_persona()
    said = [t['reply_text'] for t in call['turns'] if t['kind'] == 'reply']
    assert said == [persona.abuse_warning, persona.abuse_goodbye] and call['outcome'] == 'abusive caller', (said, call['outcome'])
    assert [e['detail'] for e in call['events'] if e['kind'] == 'abuse'] == [{'why': 'insult', 'strike': 1}, {'why': 'insult', 'strike': 2}]
    assert [b['caller'] for b in await app[STORE].blocked()] == ['+15554440001'] and '+15554440001' in app[BLOCKED]
    async with aiohttp.ClientSession() as http:  # the next call from that number, written another way
        r = await http.post(base + '/voice', data=voice_params('CA' + 'a' * 32, 'AC' + '1' * 32, '+1 555 444 0001'))
        assert await r.text() == REJECT
