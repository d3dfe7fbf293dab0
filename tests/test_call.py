"The conversation engine, driven frame by frame with fake providers and a fake Twilio."
import asyncio, json
import numpy as np
import pytest

from artist_hotline.audio import frames, payload_to_ulaw, ulaw_encode
from artist_hotline.call import Call
from artist_hotline.playout import Clock
from artist_hotline.settings import CallSettings, TurnSettings
from artist_hotline.persona import load_persona
from artist_hotline.providers import CannedLLM, EchoSTT, LanguageModel, ProviderError, Providers, TextToSpeech, ToneTTS
from artist_hotline.twilio import Mark, Media, Start, Stop
from conftest import FrameClock, voiced


class FakeTwilio:
    "Collects what the call sends; echoes marks at once, or only when told."
    def __init__(self, echo=True): self.sent, self.echo, self.call, self.hung_up = [], echo, None, False
    async def send(self, frame):
        d = json.loads(frame); self.sent.append(d)
        if d['event'] == 'mark' and self.echo: asyncio.get_running_loop().call_soon(self.call.feed, Mark('MZ1', d['mark']['name']))
    async def hangup(self): self.hung_up = True
    def events(self): return [d['event'] for d in self.sent]
    def marks(self): return [d['mark']['name'] for d in self.sent if d['event'] == 'mark']


def silence(seconds): return np.zeros(int(seconds * 8000), np.int16)


async def talk(call, pcm, pace=0.0):
    for f in frames(pcm):
        if isinstance(call.clock, FrameClock): call.clock.t += 0.02
        call.feed(Media('MZ1', ulaw_encode(f).tobytes()))
        await asyncio.sleep(pace)


def make_call(stt=('hello',), llm=None, tts=None, echo=True, clock=None, **settings):
    tw = FakeTwilio(echo)
    kw = dict(idle_reprompt_s=60, idle_hangup_s=120) | settings
    call = Call(Start('MZ1', 'CA1'), Providers(EchoSTT(list(stt)), llm or CannedLLM(), tts or ToneTTS()), load_persona(),
                tw.send, tw.hangup, CallSettings(**kw), fallback_audio={}, clock=clock or FrameClock())
    tw.call = call
    return call, tw


async def until(cond, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if cond(): return True
        await asyncio.sleep(0.01)
    raise AssertionError('condition not reached')


async def test_two_turns_two_replies_and_memory():
    llm = CannedLLM('I paint with sound. What do you make?')
    call, tw = make_call(['hello who is this', 'i make pots'], llm)
    runner = asyncio.create_task(call.run())
    await talk(call, np.r_[voiced(1.0), silence(0.8)], 0.001)
    await until(lambda: len(call.turns) == 2)
    await talk(call, np.r_[voiced(0.8, 1), silence(0.8)], 0.001)
    await until(lambda: len(call.turns) == 3)
    await call.close('done'); await runner
    assert [t.kind for t in call.turns] == ['greeting', 'reply', 'reply']
    assert len(llm.prompts) == 2
    second = llm.prompts[1]
    assert [m['role'] for m in second] == ['system', 'assistant', 'user', 'assistant', 'user']
    assert second[2]['content'] == 'hello who is this' and second[3]['content'] == 'I paint with sound. What do you make?'
    assert sum(m['content'] == call.bot.memory.persona.greeting for m in second) == 1
    t = call.turns[1]
    assert t.speech_start <= t.speech_end <= t.endpoint <= t.first_sent  # the answer began during the caller's pause,
    assert t.speech_end <= t.transcript <= t.first_token <= t.first_sentence <= t.first_audio <= t.first_sent <= t.last_sent
    assert t.prompt_tokens > 0 and t.completion_tokens == 8 and t.audio_out_s > 0 and t.stt == 'echo'


class LengthSTT(EchoSTT):
    "Transcribes an utterance as its length, to tell which audio was transcribed."
    async def transcribe(self, pcm, sr=8000): return f'{len(pcm) / sr:.1f} seconds of talk'


async def test_answer_started_in_a_pause_is_dropped_when_the_caller_goes_on():
    llm = CannedLLM('Right.')
    call, tw = make_call(llm=llm, turn=TurnSettings(eager_ms=100))
    call.ear.stt = LengthSTT()
    runner = asyncio.create_task(call.run())
    # 0.6 s of speech, a 0.3 s pause (longer than eager_ms plus the detector's own tail, shorter than the hangover), 0.6 s more
    await talk(call, np.r_[voiced(0.6), silence(0.3), voiced(0.6, 1), silence(0.8)], 0.003)
    await until(lambda: len(call.turns) == 2)
    await call.close('done'); await runner
    reply = call.turns[1]
    assert len(llm.prompts) == 2  # the premature answer got as far as the model...
    assert llm.prompts[0][-1]['content'] != reply.caller_text  # ...for the first part only,
    assert float(reply.caller_text.split()[0]) >= 1.4  # and the turn is the whole utterance
    assert [m['content'] for m in call.bot.memory.history if m['role'] == 'user'] == [reply.caller_text]
    assert [t.kind for t in call.turns] == ['greeting', 'reply'] and reply.heard_text == 'Right.'


async def test_without_eager_answering_the_transcript_follows_the_endpoint():
    call, tw = make_call(['hello'], turn=TurnSettings(eager_ms=0))
    runner = asyncio.create_task(call.run())
    await talk(call, np.r_[voiced(0.8), silence(0.8)], 0.001)
    await until(lambda: len(call.turns) == 2)
    await call.close('done'); await runner
    t = call.turns[1]
    assert t.endpoint <= t.transcript <= t.first_sent


class LengthSTT(EchoSTT):
    "Transcribes an utterance as its length, to tell which audio was transcribed."
    async def transcribe(self, pcm, sr=8000): return f'{len(pcm) / sr:.1f} seconds of talk'


async def test_a_quick_answer_is_not_heard_in_a_pause_shorter_than_speak_after_ms():
    call, tw = make_call(turn=TurnSettings(eager_ms=0))
    call.ear.stt = LengthSTT()
    runner = asyncio.create_task(call.run())
    await until(lambda: [t.kind for t in call.turns] == ['greeting'])
    sent = len(tw.sent)
    await talk(call, np.r_[voiced(0.8), silence(0.7)], 0.001)  # the turn ends at 400 ms of silence
    await until(lambda: (r := call.bot.reply) is not None and r.rec.kind == 'reply' and r.rec.first_audio is not None)
    await asyncio.sleep(0.05)
    assert 'media' not in tw.events()[sent:]  # ready, and held: 700 ms of silence may be a pause
    await talk(call, np.r_[voiced(0.8, 1), silence(1.2)], 0.001)  # the caller goes on
    await until(lambda: len(call.turns) == 2)
    await call.close('done'); await runner
    reply = call.turns[1]
    assert reply.outcome == 'replied' and float(reply.caller_text.split()[0]) >= 2.0, reply  # one turn: both stretches, the pause between
    assert reply.first_sent - reply.speech_end >= 0.8
    kinds = [k for _, k, _ in call.events]
    assert 'answer_dropped' in kinds and 'barge_in' not in kinds, kinds


@pytest.mark.parametrize('sound_db', [20, 0])
async def test_a_pause_before_a_word_that_begins_unvoiced_does_not_hear_the_bot(sound_db):
    "The voicing gate opens late on a hiss ('h', 's'): by the detector alone the caller was silent 900 ms; by sound, 500."
    rng = np.random.default_rng(0)
    line = lambda pcm: (pcm + rng.normal(0, 46, len(pcm))).astype(np.int16)  # the line's own noise, -57 dBFS
    hiss = (rng.normal(0, 1460, 3200)).astype(np.int16)  # 400 ms at -27 dBFS: no pitch, so not speech to the gate
    call, tw = make_call(turn=TurnSettings(eager_ms=0, sound_db=sound_db))
    call.ear.stt = LengthSTT()
    runner = asyncio.create_task(call.run())
    await until(lambda: [t.kind for t in call.turns] == ['greeting'])
    sent = len(tw.sent)
    await talk(call, line(np.r_[voiced(0.8), silence(0.5), hiss]), 0.001)  # the turn ends in the pause; its answer is ready
    await until(lambda: (r := call.bot.reply) is not None and r.rec.kind == 'reply' and r.rec.first_audio is not None)
    assert call.bot.quiet.is_set() == (sound_db == 0)  # by the frames alone: only speech counting, the hiss completes the 800 ms
    if sound_db == 0: await until(lambda: 'media' in tw.events()[sent:])
    else: assert 'media' not in tw.events()[sent:]
    await talk(call, line(np.r_[voiced(0.8, 1), silence(1.2)]), 0.001)
    await until(lambda: len(call.turns) >= 2)
    await call.close('done'); await runner
    if sound_db: assert 'barge_in' not in [k for _, k, _ in call.events] and call.turns[1].outcome == 'replied'


async def test_a_lost_packet_on_a_noisy_line_does_not_make_the_noise_a_sound():
    "The call fills a lost media message with digital silence; that is no noise floor, so the kitchen after it stays quiet."
    rng = np.random.default_rng(1)
    kitchen = lambda s: rng.normal(0, 460, int(s * 8000)).astype(np.int16)  # -37 dBFS of steady noise
    call, tw = make_call(turn=TurnSettings(eager_ms=0))
    call.ear.stt = LengthSTT()
    runner = asyncio.create_task(call.run())
    await until(lambda: [t.kind for t in call.turns] == ['greeting'])
    ms = 0
    for part in (kitchen(4), kitchen(1), np.r_[voiced(0.8) + kitchen(0.8), kitchen(1.2)]):
        for f in frames(part):
            call.clock.t += 0.02
            call.feed(Media('MZ1', ulaw_encode(f).tobytes(), timestamp=ms))
            ms += 20
            await asyncio.sleep(0.001)
        ms += 20  # one media message lost after each part: the call puts in 20 ms of digital silence
        call.clock.t += 0.02
    assert call.lost_ms == 40
    await until(lambda: (r := call.bot.reply) is not None and r.rec.kind == 'reply' and r.rec.first_audio is not None)
    assert call.bot.quiet.is_set()  # 1.2 s of the kitchen after the turn is silence, lost packet or not
    await call.close('done'); await runner


async def test_with_no_frames_coming_a_reply_still_waits_for_the_silence_then_speaks():
    call, tw = make_call(turn=TurnSettings(eager_ms=0), clock=Clock())  # the wall clock: the audio is fed faster than it
    runner = asyncio.create_task(call.run())
    await until(lambda: [t.kind for t in call.turns] == ['greeting'])
    await talk(call, np.r_[voiced(0.8), silence(0.5)], 0.001)  # then no more frames
    await until(lambda: len(call.turns) == 2, timeout=10)
    await call.close('done'); await runner
    reply = call.turns[1]
    assert reply.outcome == 'replied' and reply.first_sent - reply.speech_end >= 0.8, reply


class ThreeSentences(LanguageModel):
    name = 'three'
    def __init__(self): self.cancelled = False
    async def reply(self, messages, usage=None):
        try:
            for w in 'One two three four. Five six seven eight. Nine ten eleven twelve.'.split(' '):
                yield w + ' '
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def start_reply(call, tw):
    "Greeting played, then one caller turn whose reply is being spoken with no marks echoed."
    runner = asyncio.create_task(call.run())
    echoed = set()
    def greeted():  # Twilio plays the greeting: each of its marks echoed as it is sent, until the greeting is filed
        for name in tw.marks():
            if name not in echoed: echoed.add(name); call.feed(Mark('MZ1', name))
        return [t.kind for t in call.turns] == ['greeting']
    await until(greeted)
    greeting = len(tw.marks())
    await talk(call, np.r_[voiced(0.6), silence(1.0)], 0.001)  # the turn ends; at 800 ms of silence the reply is heard
    await until(lambda: len(tw.marks()) > greeting)
    await talk(call, silence(1.2), 0.001)  # the bot speaks, the caller listens (longer than `yield_ms`: talk now interrupts)
    return runner, tw.marks()[greeting:]


async def test_barge_in_clears_cancels_and_trims_history():
    llm = ThreeSentences()
    call, tw = make_call(['tell me about art'], llm, echo=False)
    runner, marks = await start_reply(call, tw)
    await until(lambda: not call.bot.reply.running)  # all three sentences are buffered at Twilio
    call.feed(Mark('MZ1', marks[0]))  # the first sentence of the reply played
    await talk(call, voiced(0.6, 2), 0.001)  # the caller talks over the rest
    await until(lambda: 'clear' in tw.events())
    for name in tw.marks()[tw.marks().index(marks[0]) + 1:]: call.feed(Mark('MZ1', name))  # Twilio echoes cleared marks at once
    await asyncio.sleep(0.05)
    reply = next(t for t in call.turns if t.kind == 'reply')
    assert reply.interrupted and reply.outcome == 'barge_in' and reply.heard_text == 'One two three four.'
    assert call.bot.memory.history[-1] == {'role': 'assistant', 'content': 'One two three four.—'}
    assert any(k == 'barge_in' for _, k, _ in call.events)
    assert tw.events().count('clear') == 1
    n_before = len(tw.sent)
    await asyncio.sleep(0.1)
    assert not any(d['event'] == 'media' for d in tw.sent[n_before:])  # nothing more of that reply is sent
    await call.close('done'); await runner


class StillWriting(ThreeSentences):
    "Writes its first sentence, then keeps the model writing until cancelled."
    async def reply(self, messages, usage=None):
        try:
            for w in 'One two three four.'.split(' '): yield w + ' '
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_barge_in_while_thinking_cancels_the_model():
    llm = StillWriting()
    call, tw = make_call(['tell me about art'], llm, echo=False)
    runner, marks = await start_reply(call, tw)
    call.feed(Mark('MZ1', marks[0]))
    await talk(call, voiced(0.6, 2), 0.001)  # the model is still writing
    await until(lambda: any(k == 'barge_in' for _, k, _ in call.events))
    assert llm.cancelled and 'clear' not in tw.events()  # nothing unplayed was buffered
    assert call.bot.memory.history[-1]['content'] == 'One two three four.—'
    await call.close('done'); await runner


async def test_cough_does_not_barge_in():
    call, tw = make_call(['tell me about art'], ThreeSentences(), echo=False)
    runner, _ = await start_reply(call, tw)
    await talk(call, np.r_[voiced(0.2, 3), silence(0.6)], 0.001)  # a cough-length burst
    await asyncio.sleep(0.2)
    assert 'clear' not in tw.events()
    assert not any(k == 'barge_in' for _, k, _ in call.events)
    await call.close('done'); await runner


class Flaky(LanguageModel):
    "Fails (or hangs) on the first `n` calls, then answers."
    name = 'flaky'
    def __init__(self, n, how='error'): self.n, self.how, self.calls = n, how, 0
    async def reply(self, messages, usage=None):
        self.calls += 1
        if self.calls <= self.n:
            if self.how == 'hang': await asyncio.sleep(3600)
            raise ProviderError('503 from the model')
        yield 'Back again.'


@pytest.mark.parametrize('how', ['error', 'hang'])
async def test_provider_failure_gives_fallback_then_recovers(how):
    llm = Flaky(2, how)
    call, tw = make_call(['first', 'second'], llm, llm_timeout_s=0.2)
    runner = asyncio.create_task(call.run())
    await talk(call, np.r_[voiced(0.6), silence(0.7)], 0.001)
    await until(lambda: len(call.turns) == 2)
    assert call.turns[1].outcome == 'fallback' and llm.calls == 2  # retried once before falling back
    assert call.turns[1].heard_text in call.bot.memory.persona.fallback_lines
    await talk(call, np.r_[voiced(0.6, 1), silence(0.7)], 0.001)
    await until(lambda: len(call.turns) == 3)
    assert call.turns[2].outcome == 'replied' and call.turns[2].heard_text == 'Back again.'
    assert [k for _, k, _ in call.events].count('fallback') == 1
    await call.close('done'); await runner


class BrokenTTS(TextToSpeech):
    name = 'broken'
    async def speak(self, text):
        raise ProviderError('tts down')
        yield


async def test_tts_down_plays_prerendered_fallback():
    persona = load_persona()
    tw = FakeTwilio()
    line = persona.fallback_lines[0]
    call = Call(Start('MZ1', 'CA1'), Providers(EchoSTT(['hi']), CannedLLM(), BrokenTTS()), persona, tw.send,
                settings=CallSettings(), fallback_audio={l: b'\x00' * 800 for l in persona.fallback_lines})
    tw.call = call
    runner = asyncio.create_task(call.run())
    await until(lambda: call.turns)  # the greeting could not be spoken: a fallback line instead
    assert call.turns[0].outcome == 'fallback' and call.turns[0].heard_text == line
    assert sum(len(payload_to_ulaw(d['media']['payload'])) for d in tw.sent if d['event'] == 'media') == 800  # all of it, in whole frames
    await call.close('done'); await runner


async def test_idle_reprompt_then_goodbye_and_hangup():
    call, tw = make_call([], idle_reprompt_s=0.3, idle_hangup_s=0.9, clock=Clock())
    await asyncio.wait_for(call.run(), 5)
    kinds = [t.kind for t in call.turns]
    assert kinds == ['greeting', 'reprompt', 'goodbye'], kinds
    assert tw.hung_up and call.record.end_reason == 'caller silent'


async def test_max_call_length_says_goodbye():
    call, tw = make_call([], max_call_s=0.3, clock=Clock())
    await asyncio.wait_for(call.run(), 5)
    assert call.turns[-1].kind == 'goodbye' and call.record.end_reason == 'maximum call length' and tw.hung_up


async def test_stop_ends_call_and_dtmf_recorded():
    from artist_hotline.twilio import Dtmf
    call, tw = make_call([])
    runner = asyncio.create_task(call.run())
    call.feed(Dtmf('MZ1', '4')); call.feed(Dtmf('MZ1', '2'))
    call.feed(Stop('MZ1'))
    await asyncio.wait_for(runner, 5)
    assert call.record.dtmf == '42' and call.record.end_reason == 'caller hung up'


async def test_the_recording_notice_plays_whole_before_the_greeting():
    "Both lines are said unprompted at the start: the greeting waits for the notice, so their audio never interleaves."
    class SlowOnTheNotice(ToneTTS):
        "Takes longer over the notice than over the greeting, as a busy machine may."
        async def speak(self, text):
            if 'recorded' in text: await asyncio.sleep(0.2)
            async for chunk in super().speak(text): yield chunk
    call, tw = make_call(tts=SlowOnTheNotice(), clock=Clock())
    call.notice = 'Just so you know, this call is recorded.'
    runner = asyncio.create_task(call.run())
    await until(lambda: [t.kind for t in call.turns] == ['notice', 'greeting'])
    await call.close('test over'); await runner
    turn_of = [int(name.split('.')[0]) for name in tw.marks()]
    assert turn_of == sorted(turn_of) and set(turn_of) == {1, 2}, tw.marks()  # every mark of the notice (turn 1) before the greeting's
