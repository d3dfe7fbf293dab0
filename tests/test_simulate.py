"Tests of artist_hotline.simulate against a small protocol-faithful bot server."
import asyncio, json, re

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, Stream, VoiceResponse

from artist_hotline.audio import FRAME_SAMPLES, SAMPLE_RATE, payload_to_pcm, pcm_to_payload, ulaw_decode, ulaw_encode
from artist_hotline.simulate import (Playback, SimError, Step, TwilioStream, dial, parse_twiml, simulate_call,
                                     twilio_signature, voiced_span)

TOKEN = 'test-auth-token'


def tone(seconds, hz=440, amp=8000):
    return (amp * np.sin(2 * np.pi * hz * np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE)).astype(np.int16)


UTT = np.concatenate([np.zeros(400, np.int16), tone(.6, 300), np.zeros(400, np.int16)])


def toy_bot(token=TOKEN, greeting_s=0.3, reply_s=0.4, chunk=800, reply=True, public_url=None, twiml=None,
            ws_sign_url=None, take_back_s=None):
    """A bot that talks the Media Streams protocol as a real server would: TwiML on /voice, greeting tone + mark,
    a tone reply + mark after each caller utterance found by energy, clear when the caller talks over it,
    hang-up on DTMF 9, protocol errors on DTMF 8; with `take_back_s`, each reply comes that long after an answer begun
    and taken back (0.1 s of tone, then a clear). `log` records everything it saw."""
    app, log = web.Application(), {'voice': [], 'handshake': [], 'messages': [], 'raw': [], 'sent': []}
    ok = lambda url, params, sig: token is None or RequestValidator(token).validate(url, params, sig or '')

    async def voice(req):
        form = dict(await req.post()); log['voice'].append((dict(req.headers), form))
        if not ok(public_url or str(req.url), form, req.headers.get('X-Twilio-Signature')): raise web.HTTPForbidden()
        if twiml: return web.Response(text=twiml, content_type='text/xml')
        s = Stream(url=f'ws://{req.host}/voice-stream')
        s.parameter(name='token', value='t0k3n'); s.parameter(name='caller', value=form['From'])
        c = Connect(); c.append(s); r = VoiceResponse(); r.append(c)
        return web.Response(text=str(r), content_type='text/xml')

    async def stream(req):
        log['handshake'].append(dict(req.headers))
        if not ok(ws_sign_url or f'ws://{req.host}/voice-stream', {}, req.headers.get('x-twilio-signature')):
            raise web.HTTPForbidden()
        ws = web.WebSocketResponse(); await ws.prepare(req)
        st = dict(sid=None, voiced=0, quiet=0, n=0, pending=set())

        async def send(m): log['sent'].append(m); await ws.send_json(m)

        async def say(seconds, name):
            pcm = tone(seconds, 660)
            for i in range(0, len(pcm), chunk):
                await send({'event': 'media', 'streamSid': st['sid'], 'media': {'payload': pcm_to_payload(pcm[i:i + chunk])}})
            await send({'event': 'mark', 'streamSid': st['sid'], 'mark': {'name': name}}); st['pending'].add(name)

        async for msg in ws:
            try: m = json.loads(msg.data)
            except (TypeError, ValueError): log['raw'].append(msg.data); continue
            log['messages'].append(m); ev = m.get('event')
            if ev == 'start':
                st['sid'] = m['streamSid']
                if greeting_s: await say(greeting_s, 'greeting')
            elif ev == 'media':
                loud = np.sqrt(np.mean(payload_to_pcm(m['media']['payload']).astype(float) ** 2)) > 500
                st['voiced'], st['quiet'] = st['voiced'] + loud, 0 if loud else st['quiet'] + 1
                if loud and st['pending'] and st['voiced'] == 3: await send({'event': 'clear', 'streamSid': st['sid']})
                if st['voiced'] >= 5 and st['quiet'] >= 10:
                    st['n'] += 1; st['voiced'] = 0
                    if take_back_s:
                        await send({'event': 'media', 'streamSid': st['sid'], 'media': {'payload': pcm_to_payload(tone(.1, 660))}})
                        await send({'event': 'clear', 'streamSid': st['sid']})
                        await asyncio.sleep(take_back_s)
                    if reply: await say(reply_s, f"reply {st['n']}")
            elif ev == 'mark': st['pending'].discard(m['mark']['name'])
            elif ev == 'dtmf' and m['dtmf']['digit'] == '9': await ws.close(); break
            elif ev == 'dtmf' and m['dtmf']['digit'] == '8':
                await ws.send_str('not json')
                await ws.send_json({'event': 'media', 'streamSid': 'MZwrong', 'media': {'payload': pcm_to_payload(tone(.1))}})
                await ws.send_json({'event': 'hello', 'streamSid': st['sid']})
                await ws.send_json({'event': 'media', 'streamSid': st['sid'], 'media': {'payload': '***'}})
            elif ev == 'stop': break
        return ws

    app.router.add_post('/voice', voice); app.router.add_get('/voice-stream', stream)
    return app, log


@pytest.fixture
def bot(aiohttp_server):
    "Start a toy bot; returns (base_url, log)."
    async def start(**kw):
        app, log = toy_bot(**kw)
        server = await aiohttp_server(app)
        return str(server.make_url('')).rstrip('/'), log
    return start


def parse_capture(text):
    "The messages Twilio sent in the 2020 capture (Node.js object prints turned into JSON)."
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if 'From Twilio:' in line and 'received' in line and '{' in line:
            block = [line[line.index('{'):]]
            depth = block[0].count('{') - block[0].count('}')
            while depth > 0:
                i += 1; block.append(lines[i]); depth += lines[i].count('{') - lines[i].count('}')
            js = re.sub(r'(\w+):', r'"\1":', '\n'.join(block)).replace("'", '"')
            out.append(json.loads(js))
        i += 1
    return out


def shape(d):
    "Key order and leaf types of a message."
    if isinstance(d, dict): return [(k, shape(v)) for k, v in d.items()]
    if isinstance(d, list): return ['list', *[shape(v) for v in d]]
    return type(d).__name__


async def run(base, script=(Step(pcm=UTT, label='hello', pause_s=.2),), **kw):
    kw = dict(auth_token=TOKEN, speed=0, settle_s=.2) | kw
    return await simulate_call(base, list(script), **kw)


# --- the webhook and signatures ------------------------------------------------------------------------

async def test_webhook_form_and_signatures(bot):
    base, log = await bot()
    res = await run(base, from_='+14155550100', params={'CallerName': 'Ada'})
    headers, form = log['voice'][0]
    assert headers['User-Agent'] == 'TwilioProxy/1.1'
    assert headers['Content-Type'] == 'application/x-www-form-urlencoded'
    assert (form['CallSid'], form['AccountSid']) == (res.call_sid, res.account_sid)
    assert (form['CallStatus'], form['Direction'], form['From'], form['CallerName']) == ('ringing', 'inbound', '+14155550100', 'Ada')
    v = RequestValidator(TOKEN)
    assert v.validate(base + '/voice', form, headers['X-Twilio-Signature'])
    sig = log['handshake'][0]['x-twilio-signature']
    assert v.validate(res.stream_url, {}, sig)
    assert not v.validate(res.stream_url.replace('ws://', 'http://'), {}, sig)
    assert sig == twilio_signature(TOKEN, res.stream_url)
    assert res.custom_parameters == {'token': 't0k3n', 'caller': '+14155550100'}


async def test_no_token_no_signature(bot):
    base, log = await bot(token=None)
    await run(base, auth_token=None)
    assert 'X-Twilio-Signature' not in log['voice'][0][0]
    assert 'x-twilio-signature' not in {k.lower() for k in log['handshake'][0]}


async def test_wrong_token_refused(bot):
    base, _ = await bot()
    with pytest.raises(SimError, match='answered 403'): await run(base, auth_token='wrong')


async def test_handshake_refused(bot):
    base, _ = await bot(ws_sign_url='https://elsewhere.example/voice-stream')
    with pytest.raises(SimError, match='handshake refused: 403'): await run(base)


async def test_signed_url_behind_proxy(bot):
    public = 'https://hotline.example.org/voice'
    base, log = await bot(public_url=public)
    with pytest.raises(SimError, match='403'): await run(base)
    res = await run(base, signed_url=public)
    assert res.ended_by == 'caller' and len(log['voice']) == 2


@pytest.mark.parametrize('twiml,msg', [
    ('<Response><Start><Stream url="wss://h/s"/></Start></Response>', 'one-way'),
    ('<Response><Connect><Stream url="wss://h/s?token=1"/></Connect></Response>', 'query string'),
    ('<Response><Connect><Stream url="https://h/s"/></Connect></Response>', 'not ws'),
    ('<Response><Connect><Stream url="wss://h/s"><Parameter name="a" value="' + 'x' * 500 + '"/></Stream></Connect></Response>', '500'),
    ('<html>oops</html>', 'root is <html>'),
])
async def test_bad_twiml(bot, twiml, msg):
    base, _ = await bot(twiml=twiml)
    with pytest.raises(SimError, match=msg): await run(base)


async def test_stream_url_mapped_to_server(bot):
    base, log = await bot(twiml='<Response><Connect><Stream url="wss://public.example/voice-stream"/></Connect></Response>',
                          ws_sign_url='wss://public.example/voice-stream')
    res = await run(base, ws_url='server')
    assert res.stream_url == 'wss://public.example/voice-stream' and res.ended_by == 'caller'
    assert RequestValidator(TOKEN).validate(res.stream_url, {}, log['handshake'][0]['x-twilio-signature'])


# --- messages exactly as Twilio sends them ---------------------------------------------------------------

async def test_messages_match_real_capture(bot, corpus):
    real = parse_capture((corpus / 'twilio' / 'media-stream-capture-2020.txt').read_text())
    assert [m['event'] for m in real][:3] == ['connected', 'start', 'media'] and real[-1]['event'] == 'mark'
    base, log = await bot()
    res = await run(base)
    ours = {}
    for m in res.sent: ours.setdefault(m['event'], m)
    for m in real:
        o = ours[m['event']]
        if m['event'] == 'start':  # parameters are the TwiML's own
            m = json.loads(json.dumps(m)); m['start']['customParameters'] = {}; o = json.loads(json.dumps(o)); o['start']['customParameters'] = {}
        assert shape(o) == shape(m), m['event']
    assert ours['stop']['stop'] == {'accountSid': res.account_sid, 'callSid': res.call_sid}
    assert log['messages'] == res.sent  # what the server received, in order


async def test_numbering(bot):
    base, _ = await bot()
    res = await run(base, [Step(pcm=UTT, dtmf='1#', pause_s=.2), Step(pcm=UTT, pause_s=.2)])
    events = [m['event'] for m in res.sent]
    assert events[:3] == ['connected', 'start', 'media'] and events[-1] == 'stop'
    assert 'sequenceNumber' not in res.sent[0] and 'streamSid' not in res.sent[0]
    assert [m['sequenceNumber'] for m in res.sent[1:]] == [str(i) for i in range(1, len(res.sent))]
    media = [m['media'] for m in res.sent if m['event'] == 'media']
    assert [x['chunk'] for x in media] == [str(i) for i in range(1, len(media) + 1)]
    assert [x['timestamp'] for x in media] == [str(20 * i) for i in range(len(media))]
    assert all(len(payload_to_pcm(x['payload'])) == FRAME_SAMPLES and x['track'] == 'inbound' for x in media)
    assert all(m['streamSid'] == res.stream_sid for m in res.sent[1:])
    dtmf = [m for m in res.sent if m['event'] == 'dtmf']
    assert [list(m) for m in dtmf] == [['event', 'streamSid', 'sequenceNumber', 'dtmf']] * 2
    assert [m['dtmf'] for m in dtmf] == [{'track': 'inbound_track', 'digit': '1'}, {'track': 'inbound_track', 'digit': '#'}]
    assert [d for d, _ in res.dtmf] == ['1', '#'] and res.counts['media_sent'] == len(media)


async def test_servers_parser_accepts_everything_sent(bot):
    from artist_hotline import twilio
    base, _ = await bot()
    res = await run(base, [Step(pcm=UTT, dtmf='5', pause_s=.2)])
    kinds = {type(twilio.parse_message(json.dumps(m))).__name__ for m in res.sent}
    assert kinds == {'Connected', 'Start', 'Media', 'Dtmf', 'Mark', 'Stop'}


async def test_silence_and_comfort_noise(bot):
    base, _ = await bot()
    quiet = await run(base, [Step(pause_s=.2)], greeting=False, reply_timeout_s=.1)
    assert all(set(payload_to_pcm(m['media']['payload'])) == {0} for m in quiet.sent if m['event'] == 'media')
    res = await run(base, noise_dbfs=-60)
    rms = np.sqrt(np.mean(res.caller[:800].astype(float) ** 2))
    assert 10 < rms < 100 and res.turns[0].bot_start_s is not None


# --- playback: marks, clears, the caller's ear ---------------------------------------------------------------

def test_playback_model():
    pb = Playback()
    pb.add(tone(.02), 0); pb.add(tone(.02), 80)
    assert [a.start for a in pb.audio] == [0, 160]
    m = pb.mark('a', 100)
    assert m.due == 320 and pb.due(319) == [] and pb.due(320) == [m]
    idle = pb.mark('idle', 400)
    assert pb.due(400) == [idle]
    pb.add(tone(.1), 400); late = pb.mark('late', 401)
    assert pb.clear(480) == [late] and late.cleared and pb.audio[-1].kept == 80 and not pb.busy(480)
    pb.add(tone(.02), 500)
    assert pb.audio[-1].start == 500  # after a clear, new audio plays at once
    tl = pb.timeline(1000)
    assert not tl[480:500].any() and (tl[500:660] == tone(.02)).all()


async def test_marks_echoed_after_playback(bot):
    base, log = await bot(reply_s=.5)
    res = await run(base, [Step(pcm=UTT, pause_s=.2), Step(pcm=UTT, pause_s=.2)])
    assert [m.name for m in res.marks] == ['greeting', 'reply 1', 'reply 2'] and not any(m.cleared for m in res.marks)
    for m in res.marks:
        assert m.due <= m.echoed < m.due + FRAME_SAMPLES
        # the echo goes out only after caller frames covering the whole queued audio
        i = next(i for i, s in enumerate(res.sent) if s['event'] == 'mark' and s['mark']['name'] == m.name)
        assert sum(s['event'] == 'media' for s in res.sent[:i]) * FRAME_SAMPLES >= m.due
    reply = [a for a in res.audio if a.received >= round(res.turns[0].caller_stop_s * SAMPLE_RATE)][:5]
    assert all(b.start == a.end for a, b in zip(reply, reply[1:]))  # sent faster than real time, played back to back
    assert res.counts['marks_echoed'] == 3 and res.errors == []


async def test_barge_in_clear(bot):
    base, log = await bot(reply_s=1.5)
    res = await run(base, [Step(pcm=UTT, label='a', pause_s=.2), Step(pcm=UTT, label='b', barge_in_after_s=.3, pause_s=.2)])
    a, b = res.turns
    assert (a.barge_in, b.barge_in) == (False, True)
    assert abs(b.caller_start_s - (a.bot_start_s + .3)) < .03
    assert len(res.clears) == 1 and b.caller_start_s <= res.clears[0] and b.clear_s < .5
    cleared = [m for m in res.marks if m.cleared]
    assert [m.name for m in cleared] == ['reply 1']
    clear = round(res.clears[0] * SAMPLE_RATE)
    assert clear <= cleared[0].echoed <= clear + FRAME_SAMPLES  # at once, not when the audio would have ended
    assert cleared[0].echoed < cleared[0].due
    assert a.bot_dropped_s > 1.0 and 0 < a.bot_audio_s < .5
    heard = res.bot[clear:round(b.bot_start_s * SAMPLE_RATE)]
    assert len(heard) and not heard.any()  # silence from the clear until the next reply
    assert b.latency_s is not None and b.bot_dropped_s == 0


async def test_a_taken_back_answer_is_not_the_reply(bot):
    "Audio the server takes back with a clear after the caller stopped is not the reply: the caller waits for the one after it."
    base, _ = await bot(take_back_s=.8)
    res = await run(base, [Step(pcm=UTT, label='hello', pause_s=.2)])
    assert len(res.clears) == 1
    assert [m.name for m in res.marks if m.echoed is not None and not m.cleared] == ['greeting', 'reply 1']


async def test_barge_into_greeting(bot):
    base, _ = await bot(greeting_s=2.0)
    res = await run(base, [Step(pcm=UTT, barge_in_after_s=.2, pause_s=.2)])
    assert res.turns[0].barge_in and len(res.clears) == 1 and res.greeting_s is not None
    assert res.marks[0].name == 'greeting' and res.marks[0].cleared


async def test_turn_latency(bot):
    base, _ = await bot()
    res = await run(base, [Step(pcm=UTT, pause_s=.2)] * 2)
    for t in res.turns:
        assert t.caller_stop_s - t.caller_start_s == pytest.approx(.6, abs=.011)
        assert t.latency_s == pytest.approx(t.bot_start_s - t.caller_stop_s)
        assert .2 <= t.latency_s < 2  # the bot waits for 200 ms of quiet
        assert t.bot_audio_s == pytest.approx(.4) and t.marks == 1
    df = res.to_frame()
    assert list(df['label']) == ['audio', 'audio'] and 'latency_s' in df


async def test_no_reply_times_out(bot):
    base, _ = await bot(reply=False, greeting_s=0)
    res = await run(base, [Step(pcm=UTT, pause_s=.1)], greeting=False, reply_timeout_s=.3)
    t = res.turns[0]
    assert (t.bot_start_s, t.latency_s, t.bot_audio_s, res.greeting_s) == (None, None, 0, None)
    assert res.ended_by == 'caller'


# --- the call record -----------------------------------------------------------------------------------------

async def test_stereo_wav_alignment(bot, tmp_path):
    base, _ = await bot()
    res = await run(base, [Step(pcm=UTT, pause_s=.2)])
    wav, sr = sf.read(res.write_call_wav(tmp_path / 'call.wav'), dtype='int16')
    assert sr == SAMPLE_RATE and wav.shape == (len(res.caller), 2) and len(res.bot) == len(res.caller)
    t = round(res.turns[0].caller_start_s * SAMPLE_RATE) - 400
    assert (wav[t:t + len(UTT), 0] == ulaw_decode(ulaw_encode(UTT))).all()
    media = b''.join(payload_to_pcm(m['media']['payload']).tobytes() for m in res.sent if m['event'] == 'media')
    assert wav[:, 0].tobytes() == media  # the left channel is exactly the line
    for a in res.audio: assert (wav[a.start:a.end, 1] == a.pcm[:a.kept]).all()
    bs = round(res.turns[0].bot_start_s * SAMPLE_RATE)
    assert wav[bs, 1] != 0 and not wav[bs - 1, 1]
    assert res.duration_s == pytest.approx(len(res.caller) / SAMPLE_RATE)


async def test_speed_factor(bot):
    base, _ = await bot()
    res = await run(base, [Step(pcm=UTT, pause_s=.1)], speed=20, settle_s=.1)
    assert res.turns[0].bot_start_s is not None and res.ended_by == 'caller' and res.counts['marks_echoed'] == 2


async def test_wav_and_text_steps(bot, tmp_path):
    sf.write(tmp_path / 'hi.wav', np.repeat(UTT, 2), 16000)
    base, _ = await bot()
    res = await run(base, [Step(wav=tmp_path / 'hi.wav', pause_s=.1)])
    assert res.turns[0].label == 'hi.wav' and res.turns[0].latency_s is not None
    res = await run(base, [Step(text='hello, is anybody there?', pause_s=.1)])
    t = res.turns[0]
    assert t.label == 'hello, is anybody there?' and t.caller_stop_s - t.caller_start_s > .5 and t.latency_s is not None


async def test_text_step_uses_espeak_synth(bot, monkeypatch):
    import sys, types
    calls = []
    def espeak_synth(text, **kw):
        calls.append((text, kw)); return np.repeat(UTT, 2), 16000
    monkeypatch.setitem(sys.modules, 'artist_hotline.offline', types.SimpleNamespace(espeak_synth=espeak_synth))
    base, _ = await bot()
    res = await run(base, [Step(text='hi there', pause_s=.1)], voice='en-gb', rate=150)
    await run(base, [Step(text='again', pause_s=.1)])
    assert calls == [('hi there', {'voice': 'en-gb', 'rate': 150}), ('again', {})]
    t = res.turns[0]
    assert t.label == 'hi there' and t.caller_stop_s - t.caller_start_s == pytest.approx(.6, abs=.011)


def test_voiced_span_on_real_speech(corpus):
    from artist_hotline.audio import read_audio
    for f in sorted((corpus / 'librivox').glob('*.wav')):
        lab = f.with_suffix('.lab').read_text().split()
        s, e = (x / SAMPLE_RATE for x in voiced_span(read_audio(f, SAMPLE_RATE)[0]))
        assert abs(s - float(lab[0])) < .06 and abs(e - float(lab[3])) < .21, f.name


# --- robustness: a server that misbehaves, malformed traffic ------------------------------------------------------

async def test_server_hangs_up(bot):
    base, _ = await bot()
    res = await run(base, [Step(pcm=UTT, pause_s=.2), Step(dtmf='9', pause_s=5), Step(pcm=UTT)])
    assert res.ended_by == 'server' and res.sent[-1]['event'] != 'stop'
    assert len(res.turns) == 1 and [d for d, _ in res.dtmf] == ['9']  # the script stopped at the hang-up


async def test_server_protocol_errors_recorded(bot):
    base, _ = await bot()
    res = await run(base, [Step(dtmf='8', pause_s=.2)], reply_timeout_s=.2)
    assert len(res.errors) == 4 and res.ended_by == 'caller'
    assert any('MZwrong' in e for e in res.errors) and any('payload' in e for e in res.errors)


async def test_send_raw(bot):
    base, log = await bot()
    st = await dial(base, TOKEN, speed=0)
    assert isinstance(st, TwilioStream)
    await st.send_raw('{"event": "media"'); await st.send_raw(b'\x00\x01')
    await st.fill(.1)
    await st.stop()
    assert log['raw'] == ['{"event": "media"', b'\x00\x01'] and st.ended_by == 'caller'
    assert [m['event'] for m in log['messages']][:2] == ['connected', 'start']


async def test_dial_without_start(bot):
    base, log = await bot()
    st = await dial(base, TOKEN, speed=0, start=False)
    await st.send_raw(json.dumps({'event': 'start', 'sequenceNumber': 1}))
    await st.close()
    assert log['messages'] == [{'event': 'start', 'sequenceNumber': 1}] and st.sent == []


def test_parse_twiml_parameters():
    t = parse_twiml('<Response><Connect><Stream url="wss://h/s"><Parameter name="a" value="1"/>'
                    '<Parameter name="b" value="x&amp;y"/></Stream></Connect></Response>')
    assert (t.url, t.parameters) == ('wss://h/s', {'a': '1', 'b': 'x&y'})
