"Speech detectors and the endpointer, on synthetic signals and on the real corpus through a phone line."
import numpy as np
import pytest

from artist_hotline.audio import FRAME_SAMPLES, SAMPLE_RATE, frames, read_audio, to_phone
from artist_hotline.vad import *


def silence(s): return np.zeros(int(s * SAMPLE_RATE), np.int16)


def phone(path): return to_phone(*read_audio(path))


def kinds(ev): return [type(e).__name__ for e in ev]


def stream(ep, pcm):
    "Feed a signal frame by frame; all events."
    out = []
    for i, f in enumerate(frames(pcm)): out += ep.push(f, i * FRAME_SAMPLES / SAMPLE_RATE)
    return out


ALL_VADS = [lambda: make_vad(), lambda: make_vad('webrtc', mode=3, voicing=None), lambda: make_vad('energy'),
            lambda: make_vad('energy', threshold_db=-35, voicing=None)]


def test_frame_db_levels():
    t = np.arange(1600) / SAMPLE_RATE
    sine = (np.sin(2 * np.pi * 300 * t) * 32767 * 10 ** (-20 / 20)).astype(np.int16)
    db = frame_db(np.r_[silence(0.02), sine])
    assert db[0] == DB_FLOOR
    assert np.allclose(db[1:], -23.0, atol=0.1)
    assert len(frame_db(np.zeros(161, np.int16))) == 2


def test_make_vad_and_bad_input():
    assert isinstance(make_vad(), WebRtcVAD) and make_vad().mode == DEFAULT_WEBRTC_MODE
    assert make_vad('energy').threshold_db == DEFAULT_ENERGY_DB
    with pytest.raises(ValueError): make_vad('nope')
    with pytest.raises(ValueError): WebRtcVAD(mode=5)
    with pytest.raises(ValueError): make_vad().is_speech(np.zeros(80, np.int16))


@pytest.mark.parametrize('new', ALL_VADS)
def test_silence_is_not_speech(new):
    v = new()
    assert not v.decide(silence(1)).any()
    assert not any(v.is_speech(f) for f in frames(silence(1)))


@pytest.mark.parametrize('new', ALL_VADS)
def test_digit_is_speech_and_stream_equals_batch(corpus, new):
    sig = np.r_[silence(0.5), phone(corpus / 'fsdd/2_jackson_0.wav'), silence(0.5)]
    v = new()
    d = v.decide(sig)
    assert not d[:20].any() and d[25:-25].mean() > 0.5
    v.reset()
    assert [v.is_speech(f) for f in frames(sig)] == d.tolist()


def test_periodicity_tells_buzz_from_hiss():
    t = np.arange(4000) / SAMPLE_RATE
    buzz = (np.sign(np.sin(2 * np.pi * 120 * t)) * 4000).astype(np.int16)
    hiss = np.random.default_rng(0).normal(0, 4000, 4000).astype(np.int16)
    assert periodicity(buzz)[1:].min() > 0.95
    assert periodicity(hiss).max() < 0.5


def test_voicing_gate_holds():
    p = np.zeros(20, bool); p[3] = True
    g = voicing_gate(p, 10)
    assert g.tolist() == [False] * 3 + [True] * 10 + [False] * 7


def test_endpointer_synthetic_decisions():
    ep = Endpointer(hangover_ms=400, min_speech_ms=100)
    seen = []
    for i, s in enumerate([0] * 5 + [1] * 20 + [0] * 30):
        ev = ep.step(bool(s), i * 0.02)
        seen.append((ep.in_speech, ep.speech_ms, kinds(ev)))
    assert seen[8] == (False, 80, [])  # 4 speech frames: not yet a turn
    assert seen[9] == (True, 100, ['SpeechStarted'])
    assert seen[24][:2] == (True, 400)
    assert seen[44] == (False, 0.0, ['TurnEnded'])  # 20 silent frames = 400 ms after the last speech frame
    assert all(not s[2] for s in seen[45:])


def test_endpointer_event_times():
    d = np.array([0] * 10 + [1] * 25 + [0] * 40, bool)
    start, end = endpoint(d, 400, 100)
    assert isinstance(start, SpeechStarted) and isinstance(end, TurnEnded)
    assert start.start == pytest.approx(0.2) and start.at == pytest.approx(0.3) and start.voiced_ms == 100
    assert end.start == pytest.approx(0.2) and end.last_voiced == pytest.approx(0.7)
    assert end.at == pytest.approx(1.1) and end.voiced_ms == 500


def test_short_pause_does_not_end_turn_and_reset():
    ep = Endpointer(hangover_ms=400, min_speech_ms=100)
    ev = []
    for i, s in enumerate([1] * 10 + [0] * 15 + [1] * 10 + [0] * 25): ev += ep.step(bool(s), i * 0.02)
    assert kinds(ev) == ['SpeechStarted', 'TurnEnded'] and ev[1].voiced_ms == 400
    for i in range(10): ep.step(True, 2 + i * 0.02)
    assert ep.in_speech
    ep.reset()
    assert not ep.in_speech and ep.speech_ms == 0


def test_endpoint_equals_streaming_endpointer():
    rng = np.random.default_rng(7)
    for _ in range(300):
        d = np.repeat(rng.random(rng.integers(0, 200)) < rng.uniform(0.05, 0.9), rng.integers(1, 8))
        h, m = int(rng.choice([20, 200, 400, 500, 2000])), int(rng.choice([0, 20, 100, 150]))
        ep, ev = Endpointer(hangover_ms=h, min_speech_ms=m), []
        for i, s in enumerate(d): ev += ep.step(bool(s), 1.0 + i * 0.02)
        fast = endpoint(d, h, m, t0=1.0)
        assert kinds(ev) == kinds(fast)
        for a, b in zip(ev, fast):
            assert np.allclose([a.start, a.last_voiced, a.at, a.voiced_ms], [b.start, b.last_voiced, b.at, b.voiced_ms])


def click(ms, seed=3):
    "A loud broadband burst of `ms` milliseconds between two seconds of silence."
    burst = np.random.default_rng(seed).normal(0, 12000, int(ms * SAMPLE_RATE / 1000)).astype(np.int16)
    return np.r_[silence(1), burst, silence(1)]


@pytest.mark.parametrize('new,ms', [(lambda: make_vad(), 20), (lambda: make_vad(), 60), (lambda: make_vad(), 200),
                                    (lambda: make_vad('energy'), 60),
                                    (lambda: make_vad('webrtc', mode=3, voicing=None), 20),
                                    (lambda: make_vad('energy', threshold_db=-35, voicing=None), 60)])
def test_click_is_no_turn(new, ms):
    sig = click(ms)
    assert detect_turns(sig, new()) == []
    assert stream(Endpointer(new()), sig) == []


def test_webrtc_stretches_clicks_so_the_gate_is_needed():
    "WebRTC VAD's own hangover makes a 20 ms click 100+ ms of speech in modes 0-2: min speech alone cannot stop it."
    raw = make_vad('webrtc', mode=2, voicing=None)
    assert raw.decide(click(20)).sum() * 20 >= DEFAULT_MIN_SPEECH_MS
    assert kinds(detect_turns(click(20), raw)) == ['SpeechStarted', 'TurnEnded']
    assert make_vad().decide(click(20)).sum() == 0


def test_every_fsdd_digit_padded_with_silence_is_one_turn(corpus):
    bad = []
    for p in sorted((corpus / 'fsdd').glob('*.wav')):
        digit = phone(p)
        ev = detect_turns(np.r_[silence(1), digit, silence(1.5)])
        if kinds(ev) != ['SpeechStarted', 'TurnEnded'] or not 1 <= ev[0].start < 1 + len(digit) / SAMPLE_RATE:
            bad.append((p.name, ev))
    assert not bad


def test_streaming_endpointer_on_real_sentence(corpus):
    wav = sorted((corpus / 'librivox').glob('*.wav'))[0]
    speech_end = float(wav.with_suffix('.lab').read_text().split()[3])
    ep = Endpointer(make_vad())
    ev = stream(ep, np.r_[phone(wav), silence(1.5)])
    assert kinds(ev) == ['SpeechStarted', 'TurnEnded']
    assert ev[0].start < 0.5 and 0 < ev[1].at - speech_end <= 0.6
    assert ev[1].at - ev[1].last_voiced == pytest.approx(DEFAULT_HANGOVER_MS / 1000)
    assert ev[1].voiced_ms > 4000


@pytest.mark.parametrize('name', ['doing_the_dishes', 'exercise_bike'])
def test_noise_gives_at_most_one_false_turn_per_minute(corpus, name):
    noise = phone(corpus / f'noise/{name}.wav')
    starts = [e for e in detect_turns(noise) if isinstance(e, SpeechStarted)]
    assert len(starts) / (len(noise) / SAMPLE_RATE / 60) <= 1.0
    assert starts == []  # the aim: none at all


def test_speech_ms_tracks_voiced_time_for_barge_in(corpus):
    sig = np.r_[silence(0.5), phone(corpus / 'webrtc-vad/leak-test.wav')]
    ep, most = Endpointer(make_vad()), 0.0
    for i, f in enumerate(frames(sig)):
        ep.push(f, i * 0.02)
        most = max(most, ep.speech_ms)
    assert most >= 1000  # a second of speech: enough for any barge-in minimum
