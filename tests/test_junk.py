"Tests for artist_hotline.junk: noise, fillers and hallucinated captions are junk; short real answers are not."
import pytest
from artist_hotline.junk import is_junk, junk_reason, FUNCTION_WORDS

JUNK = {
    'empty': ['', '   ', '\n\t', None],
    'punctuation': ['. .', '...', '?!', '-', '—'],
    'annotation': ['[BLANK_AUDIO]', '(music)', '[Music] ♪', '♪♪', '(upbeat music)', '<sil> [NOISE]', '*sigh*', '++noise++'],
    'filler': ['um', 'Uh...', 'hmm', 'Um, uh, hmm.', 'ummm', 'uh um', 'oh', 'Hmm.', 'er', 'erm', 'um um um um um'],
    'repetition': ['you you you you you you', 'Thank you. Thank you. Thank you. Thank you.', 'okay okay okay okay okay',
                   'the end the end the end'],
    'function_words': ['the', 'of the', 'it', 'i', 'and', 'the the'],
    'hallucination': ['Thank you for watching!', 'Thanks for watching!', 'thanks for watching', 'Thank you so much for watching. Bye.',
                      'Please subscribe', 'Please subscribe to my channel.', "Don't forget to like and subscribe!",
                      'Subtitles by the Amara.org community', 'Transcription by CastingWords',
                      "Sous-titres réalisés para la communauté d'Amara.org", 'ご視聴ありがとうございました', 'Продолжение следует...',
                      '(music) Thanks for watching!', 'Um, thanks for watching.', 'thanks for watching please subscribe',
                      'you', 'You.', 'you you', 'Bye.', 'So.', "I'll see you in the next video."],
}
REPLY = ['yes', 'Yes.', 'no', 'No!', 'five', '5', 'okay, thanks', 'what?', 'Okay.', 'okay', 'thank you', 'Thank you.', 'sure',
         'nope', 'huh?', 'Hmm?', 'mm-hmm', 'mm hmm', 'Mhm.', 'uh-huh', 'hello?', 'hello hello', 'Hello? Hello? Hello?', 'no no no',
         'bye bye', 'goodbye', 'Okay, bye.', 'ok bye', 'you too', 'so-so', 'so so', 'and?', 'is it?', 'who is this', "I'm sorry.",
         'blue', 'Um, yes.', 'uh i like painting', '[laughs] yes', 'hmm, what?', 'thanks for watching my kids last week',
         'Subscribe? What do you mean?', 'what do you think about the weather', 'see you', 'you know', 'the end', 'a cat',
         'Thank you for listening.', 'I want to subscribe', 'translated by me? no']


@pytest.mark.parametrize('reason,text', [(r, t) for r, ts in JUNK.items() for t in ts])
def test_junk(reason, text):
    assert junk_reason(text) == reason
    assert is_junk(text)


@pytest.mark.parametrize('text', REPLY)
def test_reply(text):
    assert junk_reason(text) is None
    assert not is_junk(text)


def test_enough_cases():
    assert sum(map(len, JUNK.values())) + len(REPLY) >= 40


def test_long_transcripts_are_answered():
    "A long real turn is never junk, even when it contains a caption phrase."
    text = 'so I was telling my friend thanks for watching the dog, and she said you should call this number about painting'
    assert not is_junk(text)
    assert not is_junk(' '.join(['hello'] * 50) + ' is anyone there')


def test_function_words_are_lowercase():
    assert all(w == w.lower() for w in FUNCTION_WORDS)
