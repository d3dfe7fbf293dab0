"""Whole calls through the server with the cloud adapters (the official OpenAI and ElevenLabs SDKs, and
the plain-HTTP ones) pointed at the local fake cloud, driven by the Twilio simulator: memory, barge-in,
provider failures and fallbacks."""
import numpy as np
import pytest

from artist_hotline.fakecloud import Engines, default_engines, running_fake_cloud
from artist_hotline.offline import ScriptedBrain, espeak_synth
from artist_hotline.persona import load_persona
from artist_hotline.providers import EchoSTT
from artist_hotline.server import FINISHED, create_app
from artist_hotline.settings import CallSettings, Settings
from conftest import voiced
from artist_hotline.simulate import Step, dial, simulate_call

TOKEN = 'sdk-test-token'


@pytest.fixture(params=['sdk', 'http', 'http+ws'])
async def cloud_call(aiohttp_server, request):
    "Start a fake cloud (transcripts from a queue) and a hotline using the cloud adapters against it (`+ws`: speech over ElevenLabs' socket)."
    stack, client, ws = [], request.param.split('+')[0], request.param.endswith('+ws')
    async def start(texts=(), engines=None, **settings):
        settings.setdefault('tts_streaming', ws)
        ctx = running_fake_cloud(profile='instant', engines=engines or Engines(EchoSTT(list(texts)), ScriptedBrain(load_persona()), espeak_synth))
        fc = await ctx.__aenter__(); stack.append(ctx)
        s = Settings(twilio_auth_token=TOKEN, openai_api_key='sk-test', openai_base_url=fc.openai_base_url,
                     elevenlabs_api_key='xi-test', elevenlabs_base_url=fc.elevenlabs_base_url, elevenlabs_voice_id='voice-1',
                     provider_client=client, **settings)
        app = create_app(s)
        server = await aiohttp_server(app)
        return fc, app, str(server.make_url('')).rstrip('/')
    start.ws = ws
    yield start
    for ctx in reversed(stack): await ctx.__aexit__(None, None, None)


async def test_two_turns_memory_through_the_sdks(cloud_call):
    fc, app, base = await cloud_call(['tell me about your paintings', 'what about music'])
    result = await simulate_call(base, [Step(pcm=voiced(0.9), pause_s=0.3), Step(pcm=voiced(0.8, 1), pause_s=0.3)],
                                 auth_token=TOKEN, speed=0)
    call = app[FINISHED][-1]
    assert [t.kind for t in call.turns] == ['greeting', 'reply', 'reply'] and [t.outcome for t in call.turns[1:]] == ['replied'] * 2
    assert call.turns[1].llm == 'openai:gpt-4o-mini' and call.turns[1].tts == ('elevenlabs-ws:' if cloud_call.ws else 'elevenlabs:') + 'eleven_flash_v2_5'
    chats = fc.journal['chat']
    assert len(chats) == 2  # the greeting is not the model's
    second = chats[1]['messages']
    assert [m['role'] for m in second] == ['system', 'assistant', 'user', 'assistant', 'user']
    assert second[2]['content'] == 'tell me about your paintings' and second[3]['content'] == call.turns[1].heard_text
    assert sum(m['content'] == call.bot.memory.persona.greeting for m in second) == 1
    tts = fc.journal['tts_ws' if cloud_call.ws else 'tts']
    assert {t['output_format'] for t in tts} == {'ulaw_8000'} and {t['voice_id'] for t in tts} == {'voice-1'}
    if cloud_call.ws: assert len(tts) >= 2 and all(t['text'].strip() for t in tts)  # a context per reply
    assert all(t.latency_s is not None for t in result.turns) and result.errors == []
    assert call.turns[1].prompt_tokens > 0 and call.turns[1].completion_tokens > 0


async def test_barge_in_clears_and_history_keeps_what_was_heard(cloud_call):
    fc, app, base = await cloud_call(['tell me about your paintings', 'wait a second'])
    script = [Step(pcm=voiced(0.9), pause_s=0.2), Step(pcm=voiced(1.0, 2), barge_in_after_s=1.2, pause_s=0.3)]
    result = await simulate_call(base, script, auth_token=TOKEN, speed=0)
    call = app[FINISHED][-1]
    cut = call.turns[1]
    assert cut.interrupted and cut.outcome == 'barge_in' and len(result.clears) == 1
    assert result.turns[1].barge_in and result.turns[0].bot_dropped_s > 0
    second = fc.journal['chat'][1]['messages']
    said = [m['content'] for m in second if m['role'] == 'assistant'][1:]
    assert cut.reply_text.strip() not in said  # the unheard reply is not remembered as said
    assert all(s.endswith('—') and cut.reply_text.startswith(s[:-1]) for s in said)
    assert call.turns[2].outcome == 'replied'


async def test_cough_during_reply_does_not_barge_in(cloud_call):
    fc, app, base = await cloud_call(['tell me about your paintings'])
    script = [Step(pcm=voiced(0.9), pause_s=0.2), Step(pcm=voiced(0.16, 3), barge_in_after_s=0.4, pause_s=0.2)]
    result = await simulate_call(base, script, auth_token=TOKEN, speed=0, reply_timeout_s=2)
    call = app[FINISHED][-1]
    assert result.clears == [] and not any(k == 'barge_in' for _, k, _ in call.events)
    assert not call.turns[1].interrupted and call.turns[1].outcome == 'replied'


async def talk_turns(fc, base, faults=()):
    "Greeting, then two caller turns; `faults` [(endpoint, kind), ...] hit the first turn only."
    stream = await dial(base, TOKEN, speed=0)
    await stream.wait_reply(0, 10, 0.5, 30)
    heard = []
    for i, pcm in enumerate((voiced(0.9), voiced(0.8, 1))):
        for f in faults if i == 0 else (): fc.faults.fail_next(*f, n=2)  # enough to defeat the single retry
        await stream.say(pcm)
        since = stream.now
        heard.append(await stream.wait_sound(since, 8))
        await stream.wait_reply(since, 8, 1.5, 30)  # longer than a stalled stream takes to time out
        fc.faults.clear()
    await stream.stop(); await stream.close()
    return heard


_DEADLINES = {'chat': dict(llm_timeout_s=1.0, llm_gap_timeout_s=1.0), 'stt': dict(stt_timeout_s=1.0, stt_final_timeout_s=1.0),
              'tts': dict(tts_timeout_s=1.0, tts_gap_timeout_s=1.0, llm_timeout_s=1.0)}  # a streamed voice's first deadline is the model's plus its own

def quick(*stages) -> CallSettings:
    "Deadlines of 1 s for the stages a test hangs only (the hang is then quick), so that a busy machine trips no other deadline."
    return CallSettings(**{k: v for st in stages for k, v in _DEADLINES['stt' if st == 'realtime' else st].items()})

@pytest.mark.parametrize('faults', [[('chat', 'error')], [('chat', 'hang')], [('chat', 'drop')], [('chat', 'malformed')],
                                    [('realtime', 'error'), ('stt', 'error')], [('realtime', 'hang'), ('stt', 'hang')],
                                    [('tts', 'error')], [('tts', 'drop')], [('tts', 'stall')]], ids=lambda f: '+'.join('-'.join(x) for x in f))
async def test_provider_failure_gives_fallback_and_next_turn_works(cloud_call, faults):
    fc, app, base = await cloud_call(['tell me about your paintings', 'what about music'], call=quick(*(e for e, k in faults if k in ('hang', 'stall'))))
    if cloud_call.ws: faults = [f for e, k in faults for f in ([('tts_ws', k)] if e == 'tts' else []) + [(e, k)]]  # the socket fails, then HTTP
    heard = await talk_turns(fc, base, faults)
    call = app[FINISHED][-1]
    failed, ok = call.turns[1], call.turns[2]
    assert failed.outcome == 'fallback' and failed.error, failed
    assert any(failed.heard_text.endswith(line) for line in call.bot.memory.persona.fallback_lines), failed.heard_text
    assert ok.outcome == 'replied' and ok.heard_text
    assert all(h is not None for h in heard)  # the caller heard something after each turn
    kinds = [k for _, k, _ in call.events]
    assert kinds.count('fallback') == 1 and 'provider_error' in kinds


@pytest.mark.parametrize('kind', ['error', 'hang', 'drop', 'malformed'])
async def test_a_failed_streamed_transcript_is_replaced_by_the_turn_transcribed(cloud_call, kind):
    fc, app, base = await cloud_call(['tell me about your paintings', 'what about music'], call=quick('stt') if kind == 'hang' else CallSettings())
    fc.faults.fail_next('realtime', kind)
    heard = await talk_turns(fc, base)
    call = app[FINISHED][-1]
    first, second = call.turns[1], call.turns[2]
    assert (first.outcome, first.caller_text, first.stt) == ('replied', 'tell me about your paintings', 'openai:gpt-4o-mini-transcribe'), first
    assert (second.outcome, second.caller_text, second.stt) == ('replied', 'what about music', 'openai-realtime:gpt-realtime-whisper'), second
    # the streamed transcript's failure, and nothing else (a hang's 1 s deadline may trip once more on a busy machine)
    assert {(k, d.get('stage')) for _, k, d in call.events if k != 'setup'} == {('provider_error', 'stt_stream')}
    assert [e['model'] for e in fc.journal['realtime']] == ['gpt-realtime-whisper'] * (2 if kind == 'drop' else 1)  # a new socket after a drop
    assert all(h is not None for h in heard)


async def test_one_failure_before_any_output_is_retried_unheard(cloud_call):
    fc, app, base = await cloud_call(['tell me about your paintings', 'what about music'])
    stream = await dial(base, TOKEN, speed=0)
    await stream.wait_reply(0, 10, 0.5, 30)
    fc.faults.fail_next('chat', 'error', n=1)
    await stream.say(voiced(0.9))
    await stream.wait_reply(stream.now, 8, 0.5, 30)
    await stream.stop(); await stream.close()
    call = app[FINISHED][-1]
    assert call.turns[1].outcome == 'replied' and fc.journal.count('chat') == 2
    assert [k for _, k, _ in call.events if k != 'setup'] == ['provider_error']


async def test_real_speech_through_pocketsphinx_gets_a_reply(cloud_call, corpus):
    from artist_hotline.audio import read_audio
    # pocketsphinx's final decode in the fake takes seconds on a loaded machine (over 10 s once, with make test's notebooks
    # and two demo calls beside it): this test is about the path, not its speed
    fc, app, base = await cloud_call(engines=default_engines(load_persona()), call=CallSettings(stt_final_timeout_s=30, stt_timeout_s=30))
    pcm, sr = read_audio(corpus / 'misc/goforward.raw', 8000)
    pcm = np.r_[np.zeros(8000, np.int16), pcm]  # a second of the line first: the call's transcription socket opens meanwhile
    result = await simulate_call(base, [Step(pcm=pcm, sr=8000, pause_s=0.3)], auth_token=TOKEN, reply_timeout_s=60)  # in real time: the wait for the reply is real seconds
    call = app[FINISHED][-1]
    assert not any(k == 'provider_error' for _, k, _ in call.events), call.events
    assert 'forward' in call.turns[1].caller_text and call.turns[1].outcome == 'replied'
    assert fc.journal.last('realtime')['model'] == 'gpt-realtime-whisper' and fc.journal.last('realtime')['format'] == 'audio/pcmu'
    assert call.turns[1].stt == 'openai-realtime:gpt-realtime-whisper' and fc.journal.count('stt') == 0
    assert result.turns[0].latency_s is not None


@pytest.mark.parametrize('kind', ['error', 'hang', 'drop', 'malformed'])
async def test_a_failed_voice_socket_speaks_the_reply_over_http(aiohttp_server, kind):
    "The ElevenLabs socket fails during a reply: its words not yet spoken are spoken over HTTP, and the next reply has a socket again."
    async with running_fake_cloud(profile='instant', engines=Engines(EchoSTT(['tell me about your paintings', 'what about music']),
                                                                     ScriptedBrain(load_persona()), espeak_synth)) as fc:
        s = Settings(twilio_auth_token=TOKEN, openai_api_key='sk-test', openai_base_url=fc.openai_base_url, elevenlabs_api_key='xi-test',
                     elevenlabs_base_url=fc.elevenlabs_base_url, elevenlabs_voice_id='voice-1', call=quick('tts') if kind == 'hang' else CallSettings())
        app = create_app(s)
        base = str((await aiohttp_server(app)).make_url('')).rstrip('/')
        stream = await dial(base, TOKEN, speed=0)
        await stream.wait_reply(0, 10, 0.5, 30)
        for i, pcm in enumerate((voiced(0.9), voiced(0.8, 1))):
            if i == 0: fc.faults.fail_next('tts_ws', kind)
            await stream.say(pcm)
            since = stream.now
            assert await stream.wait_sound(since, 8) is not None
            await stream.wait_reply(since, 8, 1.5, 30)
        await stream.stop(); await stream.close()
    call = app[FINISHED][-1]
    first, second = call.turns[1], call.turns[2]
    if kind == 'malformed':  # a bad frame is skipped: the reply goes on over the socket
        assert first.tts.startswith('elevenlabs-ws') and first.outcome == 'replied'
        return
    # before its first sound the whole reply goes over HTTP; after (a drop), the words not yet spoken do
    assert first.outcome == 'replied' and first.tts == 'elevenlabs:eleven_flash_v2_5' and first.heard_text.split() == first.reply_text.split(), first
    assert second.outcome == 'replied' and second.tts == 'elevenlabs-ws:eleven_flash_v2_5'
    assert any(k == 'provider_error' and d['stage'] == 'tts_stream' for _, k, d in call.events)
    assert [e['fault'] for e in fc.journal['tts_ws']].count(kind) == 1


async def test_barge_in_on_the_voice_socket_keeps_the_words_played(aiohttp_server):
    "Talking over a reply spoken on ElevenLabs' socket: the history keeps the words whose marks were played, no more, no whole sentences."
    async with running_fake_cloud(profile='instant', engines=Engines(EchoSTT(['tell me about your paintings', 'wait a second']),
                                                                     ScriptedBrain(load_persona()), espeak_synth)) as fc:
        s = Settings(twilio_auth_token=TOKEN, openai_api_key='sk-test', openai_base_url=fc.openai_base_url, elevenlabs_api_key='xi-test',
                     elevenlabs_base_url=fc.elevenlabs_base_url, elevenlabs_voice_id='voice-1')
        app = create_app(s)
        base = str((await aiohttp_server(app)).make_url('')).rstrip('/')
        script = [Step(pcm=voiced(0.9), pause_s=0.2), Step(pcm=voiced(1.0, 2), barge_in_after_s=1.2, pause_s=0.3)]
        result = await simulate_call(base, script, auth_token=TOKEN, speed=0)
        said = [m['content'] for m in fc.journal['chat'][1]['messages'] if m['role'] == 'assistant'][1:]
    call = app[FINISHED][-1]
    cut = call.turns[1]
    assert cut.interrupted and cut.outcome == 'barge_in' and cut.tts == 'elevenlabs-ws:eleven_flash_v2_5' and len(result.clears) == 1
    heard, meant = cut.heard_text.split(), cut.reply_text.split()
    assert 0 < len(heard) < len(meant) and meant[:len(heard)] == heard, (cut.heard_text, cut.reply_text)
    played = [m for m in result.marks if m.name.startswith(f'{cut.index}.') and m.echoed is not None and not m.cleared]
    assert len(played) == len(heard)  # one mark per word: a word counts once its sound has played
    first_sentence = cut.reply_text.split('.')[0].split()
    assert len(heard) < len(first_sentence)  # cut mid-sentence: the words, not the sentence
    assert said == [cut.heard_text + '—']  # what the model is told it said
    assert call.turns[2].outcome == 'replied'
