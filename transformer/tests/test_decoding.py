"""Masks hide what they must, the KV cache changes nothing, beam 1 is greedy, the schedule fits."""

import copy
import itertools
import math

import torch
from model import Seq2SeqTransformer, TransformerConfig
from train import noam_lr, update_average


def trained_looking_model(seed=0, **overrides) -> Seq2SeqTransformer:
    """A random model with dropout off, its output layer sharpened so greedy paths vary."""
    torch.manual_seed(seed)
    settings = dict(vocab_size=13, max_len=40, d_model=16, n_head=4, d_ff=32,
                    n_encoder_layers=2, n_decoder_layers=2, dropout=0.0)  # fmt: skip
    settings.update(overrides)
    return Seq2SeqTransformer(TransformerConfig(**settings)).double().eval()


def test_changing_a_future_target_token_leaves_earlier_logits_unchanged():
    model = trained_looking_model()
    src = torch.tensor([[5, 6, 7, 8]])
    tgt = torch.tensor([[1, 4, 9, 10, 11, 3]])
    changed = tgt.clone()
    changed[0, 4] = 12
    logits, _ = model(src, tgt)
    logits_changed, _ = model(src, changed)
    assert torch.allclose(logits[0, :4], logits_changed[0, :4], atol=1e-12)
    assert not torch.allclose(logits[0, 4:], logits_changed[0, 4:])  # the mask is not everything


def test_a_right_padded_target_gives_the_logits_of_the_unpadded_one():
    """Why the decoder needs only the causal mask: padding lies after every real position."""
    model = trained_looking_model()
    src = torch.tensor([[5, 6, 7, 8]])
    tgt = torch.tensor([[1, 4, 9, 10]])
    padded = torch.tensor([[1, 4, 9, 10, 0, 0, 0]])
    assert torch.allclose(model(src, tgt)[0], model(src, padded)[0][:, :4], atol=1e-12)


def test_changing_a_padded_source_token_changes_nothing():
    model = trained_looking_model()
    src = torch.tensor([[5, 6, 7, 0, 0]])
    mask = src != 0
    tgt = torch.tensor([[1, 4, 9, 10]])
    memory, src_mask, _ = model.encode(src)
    logits = model.decode(tgt, memory, src_mask)[0]
    garbage = torch.tensor([[5, 6, 7, 11, 12]])  # the same real tokens, other tokens under the pad
    memory2, src_mask2, _ = model.encode(garbage, src_mask=mask[:, None, None, :])
    logits2 = model.decode(tgt, memory2, src_mask2)[0]
    assert torch.allclose(logits, logits2, atol=1e-12)
    assert torch.allclose(memory[:, :3], memory2[:, :3], atol=1e-12)


def test_cached_decoding_gives_the_same_tokens_and_logits_as_recomputing_the_prefix():
    for norm_first in (False, True):
        model = trained_looking_model(seed=1, norm_first=norm_first)
        src = torch.tensor([[5, 6, 7, 8, 9], [10, 4, 3, 0, 0]])
        tokens, logits = model.greedy_decode(src, max_len=30, use_cache=True)
        tokens_ref, logits_ref = model.greedy_decode(src, max_len=30, use_cache=False)
        assert torch.equal(tokens, tokens_ref)
        for row in range(2):  # a finished row's later logits are of padding, not compared
            ended = (tokens[row] == model.eos_id).nonzero()
            n = int(ended[0]) + 1 if len(ended) else tokens.size(1)
            assert torch.allclose(logits[row, :n], logits_ref[row, :n], atol=1e-10)


def test_beam_of_size_one_equals_greedy_decoding():
    for seed in range(3):
        model = trained_looking_model(seed=seed)
        src = torch.tensor([[5, 6, 7, 8, 9, 10]])
        greedy = model.greedy_decode(src, max_len=25)[0][0].tolist()
        if model.eos_id in greedy:
            greedy = greedy[: greedy.index(model.eos_id) + 1]
        assert model.beam_search(src, beam_size=1, max_len=25) == greedy


def _log_prob(model, src, tokens):
    """log p(tokens | src), summed over the tokens (teacher forcing from bos)."""
    tgt_in = torch.tensor([[model.bos_id, *tokens[:-1]]])
    logits, _ = model(src, tgt_in)
    return logits.log_softmax(-1)[0, range(len(tokens)), tokens].sum().item()


def test_an_unbounded_beam_is_exhaustive_search():
    """With a width above the number of prefixes, beam search keeps every one of them, so it
    must return the single most likely of all sequences up to max_len (ended by eos or cut).
    Seed 7 is a model whose greedy path is not that sequence, so greedy cannot pass for it."""
    model = trained_looking_model(seed=7)
    src = torch.tensor([[5, 6, 7, 8]])
    V, max_len = model.cfg.vocab_size, 3
    candidates = []
    for length in range(1, max_len + 1):
        for tokens in itertools.product(range(V), repeat=length):
            ends = tokens[-1] == model.eos_id or length == max_len
            if ends and model.eos_id not in tokens[:-1]:
                candidates.append(list(tokens))
    best = max(candidates, key=lambda tokens: _log_prob(model, src, tokens))
    found = model.beam_search(src, beam_size=V**max_len, max_len=max_len, length_penalty=0.0)
    assert found == best
    greedy = model.beam_search(src, beam_size=1, max_len=max_len, length_penalty=0.0)
    assert _log_prob(model, src, greedy) < _log_prob(model, src, best)


def test_a_wider_beam_is_never_less_likely_than_greedy_and_sometimes_more():
    gains = []
    for seed in range(4):
        model = trained_looking_model(seed=seed)
        src = torch.tensor([[5, 6, 7, 8]])
        greedy = model.beam_search(src, beam_size=1, max_len=12, length_penalty=0.0)
        beam = model.beam_search(src, beam_size=5, max_len=12, length_penalty=0.0)
        gains.append(_log_prob(model, src, beam) - _log_prob(model, src, greedy))
    assert min(gains) >= -1e-9 and max(gains) > 1e-6


def test_warm_up_schedule_matches_its_formula():
    d_model, warmup = 512, 4000  # the paper's base model
    for step in (1, 100, 4000, 4001, 100_000):
        expected = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert math.isclose(noam_lr(step, d_model, warmup), expected, rel_tol=1e-12)
    peak = noam_lr(warmup, d_model, warmup)
    assert math.isclose(peak, 1 / math.sqrt(d_model * warmup), rel_tol=1e-12)  # both arms meet
    assert noam_lr(warmup - 1, d_model, warmup) < peak > noam_lr(warmup + 1, d_model, warmup)


def test_weight_averaging_gives_the_mean_of_the_models_it_saw_with_tied_weights_once():
    """The embedding, the target embedding and the output layer are one matrix: averaged once,
    not three times (state_dict lists it under three names)."""
    models = [trained_looking_model(seed=seed) for seed in range(5)]
    average = copy.deepcopy(models[0])
    with torch.no_grad():
        for p in average.parameters():
            p.fill_(123.0)  # what was there before the first model is forgotten
    for n, model in enumerate(models, 1):
        update_average(average, model, n)
    for name, value in average.named_parameters():
        expected = torch.stack([dict(m.named_parameters())[name] for m in models]).mean(0)
        assert torch.allclose(value, expected, atol=1e-14), name
    assert average.src_embed.weight is average.out_proj.weight


def test_cached_and_uncached_decoding_agree_for_many_steps_even_when_padding_is_emitted():
    """A random model with learned positions emits the padding id now and then (row 2 of this
    batch at step 6); both paths must treat the emitted id as a token like any other, and the
    rows that ended must keep agreeing too: every logit of every row, for 50 steps."""
    model = trained_looking_model(seed=16, max_len=60, positional="learned")
    src = torch.randint(3, 13, (8, 6), generator=torch.Generator().manual_seed(16))
    tokens, logits = model.greedy_decode(src, max_len=50, use_cache=True)
    tokens_ref, logits_ref = model.greedy_decode(src, max_len=50, use_cache=False)
    emitted = tokens[:, :-1] == model.cfg.pad_id
    assert emitted.any() and tokens.size(1) == 50  # the case this test is about is reached
    assert torch.equal(tokens, tokens_ref)
    assert torch.allclose(logits, logits_ref, atol=1e-10)
