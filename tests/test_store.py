"The call store on SQLite and PostgreSQL: schema and migrations, turns written as they happen, crash safety, counts, memory and queries."
import asyncio, json, signal, subprocess, sys, textwrap, threading
from datetime import timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from artist_hotline.audio import frames, ulaw_encode
from artist_hotline.call import Call
from artist_hotline.records import CallRecord, TurnRecord
from artist_hotline.persona import load_persona
from artist_hotline.providers import CannedLLM, EchoSTT, Providers, ToneTTS
from conftest import FrameClock
from artist_hotline.store import (SCHEMA_VERSION, Store, StoreSink, database_url, is_anonymous, latency_ms,
                                  plain_summary, utcnow)
from artist_hotline.twilio import Mark, Media, Start

@pytest.fixture
async def store(db_url):
    s = await Store(db_url).open()
    yield s
    await s.close()


def test_database_url():
    assert database_url('') == 'sqlite:///calls.sqlite3'
    assert database_url('postgresql://u@h/db') == 'postgresql+psycopg://u@h/db'
    assert database_url('postgres://u@h/db') == 'postgresql+psycopg://u@h/db'
    with pytest.raises(ValueError, match='not a database URL'): database_url('x.sqlite3')
    assert 'secret' not in repr(Store('postgresql://u:secret@h/db'))


async def test_schema_created_versioned_and_migrated(db_url):
    async with Store(db_url) as s:
        tables = await s._tx(lambda c: set(sa.inspect(c).get_table_names()))
        assert {'calls', 'turns', 'events', 'refusals', 'schema_version'} <= tables
        assert await s._tx(lambda c: c.exec_driver_sql('SELECT max(version) FROM schema_version').scalar()) == SCHEMA_VERSION
        await s.start_call('CA1', '+15550000001')
    async with Store(db_url) as s:  # opening again changes nothing
        assert (await s.get_call('CA1'))['caller'] == '+15550000001'
    nxt = SCHEMA_VERSION + 1
    async with Store(db_url, version=nxt, migrations={nxt: ['ALTER TABLE calls ADD COLUMN rating INTEGER']}) as s:
        cols = await s._tx(lambda c: [col['name'] for col in sa.inspect(c).get_columns('calls')])
        assert 'rating' in cols and (await s.get_call('CA1'))['caller'] == '+15550000001'
    with pytest.raises(RuntimeError, match='newer than this code'):
        await Store(db_url).open()
    with pytest.raises(RuntimeError, match='missing'):
        await Store(db_url, version=nxt + 1, migrations={}).open()


async def test_turn_written_pending_then_updated(store):
    await store.start_call('CA1', '+15550000001', 'Synthetic Jason', stream_sid='MZ1')
    rec = TurnRecord(2, caller_text='hello', speech_end=1.0, endpoint=1.4, transcript=1.7, stt='echo')
    await store.write_turn('CA1', rec)
    t = (await store.get_call('CA1'))['turns']
    assert [(x['idx'], x['outcome'], x['caller_text'], x['first_sent']) for x in t] == [(2, 'pending', 'hello', None)]
    created = t[0]['created_at']
    rec.first_token, rec.first_audio, rec.first_sent, rec.reply_text, rec.heard_text = 2.0, 2.3, 2.31, 'Hi there.', 'Hi there.'
    rec.outcome, rec.prompt_tokens, rec.completion_tokens, rec.chars_out = 'replied', 120, 3, 9
    await store.write_turn('CA1', rec)
    (t,) = (await store.get_call('CA1'))['turns']
    assert (t['outcome'], t['heard_text'], t['prompt_tokens'], t['created_at']) == ('replied', 'Hi there.', 120, created)
    assert t['updated_at'] >= created and t['latency_ms']['total'] == pytest.approx(1310, abs=0.2)


async def test_sink_keeps_the_order_of_writes(store):
    "Many updates of one turn issued at once land in issue order, whatever the pool's threads do."
    call = CallRecord('CA7', 'MZ7', '+15550000007', load_persona().name, lambda: 1.0)
    rec = TurnRecord(1, caller_text='hi')
    async with StoreSink(store, batch=7) as sink:  # small batches: the order must hold across them
        tasks = []
        for i in range(30):
            rec.reply_text = f'version {i}'
            rec.outcome = 'pending' if i < 29 else 'replied'
            tasks.append(asyncio.create_task(sink.turn(call, rec)))
            tasks.append(asyncio.create_task(sink.event(call, 'tick', {'i': i})))
            await asyncio.sleep(0)  # let the task snapshot this version
        await asyncio.gather(*tasks)
        assert await sink.flush()
    c = await store.get_call('CA7')
    assert (c['turns'][0]['reply_text'], c['turns'][0]['outcome']) == ('version 29', 'replied')
    assert [e['detail']['i'] for e in c['events']] == list(range(30))
    assert (c['caller'], c['stream_sid'], sink.failures) == ('+15550000007', 'MZ7', 0)


async def test_call_started_at_the_webhook_gets_its_stream_sid_from_the_sink(store):
    await store.start_call('CA8', '+15550000008', 'Synthetic Jason')  # the voice webhook: no stream yet
    assert await store.open_calls() == 1
    call = CallRecord('CA8', 'MZ8', '+15550000008', load_persona().name, lambda: 1.0)
    async with StoreSink(store) as sink: await sink.turn(call, TurnRecord(1, kind='greeting'))
    c = await store.get_call('CA8')
    assert (c['stream_sid'], c['persona'], len(c['turns'])) == ('MZ8', 'Synthetic Jason', 1)
    await store.start_call('CA8', '+15550000008', 'Other')  # keeps what is there
    assert (await store.get_call('CA8'))['persona'] == 'Synthetic Jason'


async def test_sql_runs_off_the_event_loop(store):
    loop_thread = threading.get_ident()
    assert await store._tx(lambda c: threading.get_ident()) != loop_thread
    # many concurrent writers (SQLite: serialised on one thread; PostgreSQL: the pool)
    await asyncio.gather(*[store.start_call(f'CA{i}', f'+1555000{i:04d}') for i in range(40)])
    assert len(await store.list_calls(limit=100)) == 40


def speechlike(seconds, seed=0):
    rng = np.random.default_rng(seed); n = int(seconds * 8000); t = np.arange(n) / 8000
    phase = 2 * np.pi * np.cumsum(130 + 20 * np.sin(2 * np.pi * 0.7 * t + seed)) / 8000
    x = sum(np.sin(k * phase + rng.uniform(0, 6.28)) / k for k in range(1, 20))
    return (4000 * x * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.int16)


async def test_a_conversation_through_the_sink(store):
    sink = StoreSink(store)
    await sink.open()
    async def send(frame):
        d = json.loads(frame)
        if d['event'] == 'mark': asyncio.get_running_loop().call_soon(call.feed, Mark('MZ1', d['mark']['name']))
    clock = FrameClock()  # the call's times are the audio's: its second of silence after each turn is a second
    call = Call(Start('MZ1', 'CA42'), Providers(EchoSTT(['hello who is this', 'i make pots']), CannedLLM('Nice. What do you make?'),
                ToneTTS()), load_persona(), send, sink=sink, caller='+15550000042', clock=clock)
    runner = asyncio.create_task(call.run())
    await asyncio.sleep(0.05)
    for i in range(2):
        for f in frames(np.r_[speechlike(0.8, i), np.zeros(8000, np.int16)]):
            clock.t += 0.02
            call.feed(Media('MZ1', ulaw_encode(f).tobytes())); await asyncio.sleep(0.001)
        await asyncio.sleep(0.1)
    call.record.key('5')
    await call.close('test over'); await runner
    await sink.end_call(call.sid, outcome=call.record.end_reason, summary=plain_summary(call.turns), recording='/tmp/CA42.wav')
    await sink.close()
    c = await store.get_call('CA42')
    assert [(t['kind'], t['outcome']) for t in c['turns']] == [('greeting', 'replied'), ('reply', 'replied'), ('reply', 'replied')]
    assert [t['caller_text'] for t in c['turns']] == ['', 'hello who is this', 'i make pots']
    assert all(t['stt'] == 'echo' and t['llm'] == 'canned' and t['prompt_tokens'] > 0 for t in c['turns'][1:])
    assert all(t['latency_ms']['total'] is not None for t in c['turns'][1:])
    assert (c['outcome'], c['recording'], c['dtmf'], c['ended_at'] is not None) == ('test over', '/tmp/CA42.wav', '5', True)
    assert 'dtmf' in [e['kind'] for e in c['events']]
    assert await store.last_summary('+15550000042') == 'They said: "hello who is this" / "i make pots".'
    assert sink.failures == 0


CRASHER = textwrap.dedent('''
    import asyncio, sys, time
    from artist_hotline.store import Store, StoreSink
    from artist_hotline.records import TurnRecord
    async def main():
        store = await Store(sys.argv[1]).open()
        sink = StoreSink(store)
        await sink.open()
        await sink.start_call('CA666', '+15550000666', 'Synthetic Jason')
        call = type('C', (), dict(sid='CA666'))()
        await sink.turn(call, TurnRecord(1, kind='greeting', reply_text='Hi', heard_text='Hi', outcome='replied', first_sent=0.1))
        await sink.turn(call, TurnRecord(2, caller_text='can you hear me', speech_end=3.1, endpoint=3.5, transcript=3.8))
        await sink.flush()
        print('written', flush=True)
        time.sleep(60)
    asyncio.run(main())
''')


async def test_crash_mid_call_loses_nothing_written(db_url):
    "A server killed mid-call (SIGKILL: no close, no end_call) leaves the call and its caller turn in the database."
    p = subprocess.Popen([sys.executable, '-c', CRASHER, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), 60)
        assert line.strip() == 'written', p.stderr.read() if p.poll() is not None else line
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    async with Store(db_url) as s:
        c = await s.get_call('CA666')
        assert c['ended_at'] is None and await s.open_calls() == 1
        assert [(t['idx'], t['outcome'], t['caller_text']) for t in c['turns']] == [(1, 'replied', ''), (2, 'pending', 'can you hear me')]
        await s.end_call('CA666', outcome='server crashed')  # what a restarted server may do
        assert await s.open_calls() == 0


async def test_counts_are_shared_between_replicas(db_url):
    a, b = await Store(db_url).open(), await Store(db_url).open()
    try:
        await a.start_call('CA1', '+15550000001')
        await b.start_call('CA2', '+15550000001')
        await a.start_call('CA3', '+15550000002')
        await b.start_call('CA0', '+15550000001', started_at=utcnow() - timedelta(hours=1, minutes=1))
        await a.start_call('CAold', '+15550000003', started_at=utcnow() - timedelta(hours=5))  # crashed long ago
        assert await a.calls_in_last_hour('+1 555 000 0001') == await b.calls_in_last_hour('+15550000001') == 2
        assert await b.open_calls() == 5
        assert await a.heartbeat('A') == {'no stream': 2}  # CA0 and CAold: their streams never came
        await a.end_call('CA1', outcome='caller hung up')
        assert await b.open_calls() == 2
        assert (await b.admit('CA9', '+15550000001', per_hour=2)).reason == 'caller over the hourly limit'
        assert [(r['caller'], r['reason']) for r in await a.refusals()] == [('+15550000001', 'caller over the hourly limit')]
    finally:
        await a.close(); await b.close()


async def test_memory_is_the_latest_summary_bounded(store):
    t = utcnow()
    await store.start_call('CA1', '+15550000001', started_at=t - timedelta(days=2))
    await store.end_call('CA1', t - timedelta(days=2) + timedelta(minutes=3), 'caller hung up', summary='Old call about clay.')
    await store.start_call('CA2', '+15550000001', started_at=t - timedelta(days=1))
    await store.end_call('CA2', t - timedelta(days=1) + timedelta(minutes=3), 'caller hung up', summary='They paint rivers. ' * 100)
    await store.start_call('CA3', '+15550000001', started_at=t)  # in progress, no summary yet
    got = await store.last_summary('+15550000001', max_chars=200)
    assert got.startswith('They paint rivers.') and len(got) <= 200 and got.endswith('…')
    assert await store.last_summary('+15550000009') is None
    await store.start_call('CA4', 'anonymous'); await store.end_call('CA4', summary='secret')
    assert await store.last_summary('anonymous') is None
    assert await store.end_call('CA2', outcome='caller hung up') is None  # a later end without a summary keeps it
    assert (await store.get_call('CA2'))['summary'].startswith('They paint rivers.')


async def test_list_and_get(store):
    t = utcnow()
    for i in range(5): await store.start_call(f'CA{i}', f'+1555000000{i}', started_at=t - timedelta(minutes=10 - i))
    await store.end_call('CA4', t, 'caller hung up')
    page = await store.list_calls(limit=2)
    assert [c['sid'] for c in page] == ['CA4', 'CA3']
    assert [c['sid'] for c in await store.list_calls(limit=2, offset=2)] == ['CA2', 'CA1']
    assert page[0]['duration_s'] == pytest.approx(360) and page[1]['duration_s'] is None and page[0]['n_turns'] == 0
    assert await store.get_call('CAnope') is None
    await store.add_event('CA4', 'odd', {'value': {1, 2}.__class__.__name__, 'when': t})  # not JSON: stored as text
    assert (await store.get_call('CA4'))['events'][0]['detail']['value'] == 'set'
    with pytest.raises(ValueError): await store.update_call('CA4', nonsense=1)
    assert await store.update_call('CA4', recording='/x.wav') and not await store.update_call('CAnope', recording='/x.wav')


async def test_a_write_the_database_refuses_is_set_aside_the_others_land(store):
    await store._tx(lambda c: c.exec_driver_sql('DROP TABLE events'))
    call = CallRecord('CA1', '', '+1555', load_persona().name)
    async with StoreSink(store) as sink:
        await sink.event(call, 'barge_in', {})
        await sink.turn(call, TurnRecord(1))
        assert await sink.flush()
    assert sink.dropped == 1 and await store._tx(lambda c: c.exec_driver_sql('SELECT idx FROM turns').scalar()) == 1


def test_helpers():
    assert [is_anonymous(c) for c in ('+15551234567', 'anonymous', '+266696687', '+7378742833', '')] == [False, True, True, True, True]
    lat = latency_ms(dict(speech_end=1, endpoint=1.5, transcript=2, first_token=None, first_audio=2.5, first_sent=2.6))
    assert lat == dict(hangover=500, stt=500, first_token=None, first_audio=None, final=None, transport=100, total=1600)
    assert plain_summary([]) == ''


def test_latency_counts_only_what_the_caller_waited_for():
    # answered during the caller's pause: the transcript was ready before the turn ended
    rec = TurnRecord(2, speech_end=1.0, endpoint=1.4, transcript=1.3, first_token=1.6, first_audio=1.9, first_sent=1.91)
    lat = latency_ms(rec)
    assert lat['stt'] == 0 and lat['first_token'] == pytest.approx(200) and lat['hangover'] == pytest.approx(400)
    assert sum(v for k, v in lat.items() if k != 'total' and v is not None) == pytest.approx(lat['total'])
