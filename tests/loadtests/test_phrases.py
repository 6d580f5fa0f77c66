"""The benchmark texts with the length spread of real traffic (loadtests/phrases.py traffic_mix)."""

import numpy as np

from loadtests.phrases import real_phrases, traffic_mix


def test_traffic_mix_uses_every_utterance_once_and_spreads_lengths_up_to_the_token_limit():
    mix = traffic_mix()
    assert mix == traffic_mix()  # seeded
    assert mix != traffic_mix(seed=1)
    assert len(set(mix)) == len(mix)  # never-seen texts: none repeated
    words = np.array([len(t.split()) for t in mix])
    utterances = real_phrases(1, 40)
    assert words.sum() == sum(len(u.split()) for u in utterances)  # each utterance used exactly once
    assert 11 <= words.mean() <= 15 and np.median(words) < 12  # mostly short, some long
    assert 0.01 < (words > 40).mean() < 0.06  # longer than any one utterance: a few
    assert words.max() >= 180 and (words >= 70).sum() >= 200  # long ones, at and past 256 tokens
