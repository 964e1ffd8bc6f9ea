"""The tiny T5 tokenizer: a Unigram vocabulary trained in code on a built-in corpus of prompt words.

Every tiny model with a text encoder (MusicGen's, AudioGen's T5) saves this tokenizer, and its text
encoder's vocabulary is exactly its size. Training is deterministic across processes.
"""

from __future__ import annotations

import functools
import json
import string

from server.tiny.dims import TINY

_CORPUS_WORDS = """
a an the and or with without of in on at to for from by into over under through as is are
this that some very more less slow fast soft loud low high deep bright warm cold light heavy
music song track tune beat beats loop loops sound sounds noise audio sample melody melodies
harmony harmonies rhythm rhythms groove grooves tempo bpm key major minor chord chords note
notes scale bass bassline line lead pad pads arpeggio riff riffs solo intro outro verse chorus
bridge drop build buildup breakdown fill hook vocal vocals voice voices choir singer singing
sung hum humming whistle whistling lyrics instrumental acoustic electric electronic digital
analog synth synths synthesizer keyboard piano organ guitar guitars violin viola cello strings
harp flute clarinet oboe bassoon saxophone sax trumpet trombone horn horns tuba brass woodwind
drum drums kick snare hihat hat hats cymbal cymbals clap claps percussion tambourine shaker
bongo bongos conga tabla marimba xylophone vibraphone bells glockenspiel ukulele banjo mandolin
sitar accordion harmonica orchestra orchestral ensemble band quartet trio duet
pop rock jazz blues funk soul disco house techno trance dubstep drum and bass dnb hip hop rap
trap lofi lo-fi ambient chillout chill classical baroque romantic cinematic epic soundtrack
score folk country reggae ska punk metal grunge indie alternative latin salsa bossa nova samba
tango flamenco afrobeat kpop jpop edm dance club rave garage grime drill gospel opera
upbeat happy sad dark moody calm relaxing peaceful dreamy energetic intense aggressive gentle
mellow smooth groovy funky catchy uplifting emotional melancholic nostalgic mysterious eerie
tense playful cheerful joyful romantic hopeful powerful driving bouncy punchy crisp lush
atmospheric spacious minimal minimalist experimental retro vintage modern futuristic 80s 90s
70s 60s 2000s style inspired feel vibe mood background cinematic trailer video game
dog dogs barking bark cat meowing bird birds chirping singing rain raining thunder storm wind
blowing waves ocean sea water river stream dripping splash fire crackling footsteps walking
running door knocking knock creaking car engine motor truck train horn siren traffic street
city crowd people talking laughing cheering applause clapping baby crying man woman child
speaking speech whisper scream typing keyboard clock ticking alarm phone ringing bell bells
church helicopter airplane plane jet explosion gunshot glass breaking wood metal hammer
machine machinery factory construction insects crickets frogs cow horse sheep rooster
forest jungle farm kitchen cooking frying sizzling boiling night morning
one two three four five six seven eight nine ten hundred twenty thirty forty fifty sixty
seconds minutes long short loop seamless fade in out up down left right stereo mono
"""


def _corpus() -> list[str]:
    words = _CORPUS_WORDS.split()
    lines: list[str] = []
    # The Unigram trainer seeds its pieces with substrings found in at least two distinct
    # pre-tokens (counts do not matter there), so each word also comes with punctuation attached:
    # "▁music" is then a substring of "▁music," and "▁music." and becomes a whole-word piece.
    for word in words:
        for form in (word, word.capitalize()):
            lines += [form, form + ",", form + "."]
    lines += [
        "upbeat electronic music with a groovy bassline and punchy drums",
        "a calm piano melody at 90 bpm, relaxing and peaceful",
        "80s pop track with bassy drums and synth",
        "90s rock song with loud guitars and heavy drums",
        "lofi hip hop beat, chill, vinyl crackle, 70 BPM",
        "epic orchestral soundtrack with choir and brass, cinematic trailer",
        "dog barking in the distance while rain is falling",
        "a car engine starting, then driving away on a wet street",
        "Ambient pads; slow arpeggios (C minor) - dreamy & spacious!",
    ]
    # Every ascii letter, digit and punctuation mark, alone and inside words.
    chars = string.ascii_letters + string.digits + string.punctuation
    lines += list(chars)
    lines += [" ".join(chars[i : i + 8]) for i in range(0, len(chars), 8)]
    return lines


@functools.lru_cache(maxsize=1)
def trained_pieces() -> tuple[tuple[str, float], ...]:
    """A T5-style Unigram vocabulary trained on the built-in corpus: <pad>=0, </s>=1, <unk>=2."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    # The same pre-tokenizer transformers' T5Tokenizer builds (and rebuilds on load).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=TINY["tokenizer"]["max_pieces"],
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    vocab = [(piece, round(float(score), 6)) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]
    specials, pieces = vocab[:3], vocab[3:]
    if [p for p, _ in specials] != ["<pad>", "</s>", "<unk>"]:
        raise RuntimeError(f"unexpected special tokens from the Unigram trainer: {specials}")
    # Make the result the same in every process. The trainer's scores differ only in float noise
    # (rounded away above), but the single characters it re-adds after pruning get their scores
    # (min_score - k * 1e-4) in hash-set order, which changes from process to process. Single
    # characters are the fallback pieces anyway: give them all one score, below every longer piece.
    floor = round(min(score for _, score in pieces) - 1.0, 6)
    pieces = [(p, floor if len(p) == 1 else score) for p, score in pieces]
    return tuple(specials + sorted(pieces, key=lambda item: (-item[1], item[0])))


def build_tokenizer():
    """The tiny T5 tokenizer (transformers' T5Tokenizer, tokenizers-backed), as t5-base lays it out:
    special tokens first, then the pieces, then the <extra_id_N> sentinels in reverse order."""
    from transformers import T5Tokenizer

    extra_ids = TINY["tokenizer"]["extra_ids"]
    vocab = list(trained_pieces()) + [(f"<extra_id_{i}>", 0.0) for i in reversed(range(extra_ids))]
    return T5Tokenizer(vocab=vocab, extra_ids=extra_ids, model_max_length=TINY["tokenizer"]["model_max_length"])
