"""Continuous batching (`continuous.ContinuousBatcher`) against the one-at-a-time path (`generate_rows`).

The tiny Qwen2 with two LoRA adapters (tests/infer/conftest.py); rows are driven directly, without HTTP.
"""

from __future__ import annotations

import threading
import time

import pytest

from instill.infer.serve.continuous import ContinuousBatcher, RunningBatch, continuous_reason
from instill.infer.serve.rows import Row, generate_rows

QUESTIONS = ["Hello!", "Why is the sky blue? " * 3, "2+2?", "Tell me a very long story about a cat " * 5, "Hi",
             "Name three colours."]


class Answer:
    """A row's events, and a flag set when it ends."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.ended = threading.Event()

    def __call__(self, kind, value) -> None:
        self.events.append((kind, value))
        if kind != "text":
            self.ended.set()

    @property
    def text(self) -> str:
        return "".join(v for k, v in self.events if k == "text")

    @property
    def end(self):
        return self.events[-1] if self.events and self.events[-1][0] != "text" else None


def make_row(served, name, question, max_tokens, **kwargs):
    model = served.models[name]
    answer = Answer()
    row = Row(model.chat_prompt([{"role": "user", "content": question}]), model.tokenizer, model.chat_stop_ids,
              max_tokens, answer, adapter=model.adapter, **kwargs)
    return row, answer


JOBS = [("tiny", QUESTIONS[0], 9), ("alpha", QUESTIONS[1], 3), ("beta", QUESTIONS[2], 14),
        ("alpha", QUESTIONS[3], 1), ("tiny", QUESTIONS[4], 20), ("beta", QUESTIONS[5], 6), ("alpha", QUESTIONS[2], 11)]


def one_at_a_time(served, jobs, **kwargs):
    out = []
    for job in jobs:
        row, answer = make_row(served, *job, **kwargs)
        generate_rows(served.model, [row], served.pad_id, served.multi_adapter)
        out.append((answer.text, answer.end, row.tokens))
    return out


def wait(condition, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_the_tiny_models_can_be_batched_continuously(served):
    assert continuous_reason(served.model) is None
    assert "vision-language" in continuous_reason(served.model, media=object())


@pytest.mark.parametrize("sampled", [False, True])
def test_answers_match_one_at_a_time_with_requests_arriving_mid_batch(served, sampled):
    """Mixed prompt lengths, budgets and adapters; the later rows arrive while the first three decode.
    Sampled rows draw from their own seeded generators (fewer of them: a draw over 152k tokens is slow)."""
    kwargs = dict(temperature=0.8, seed=7) if sampled else {}
    jobs = JOBS[:5] if sampled else JOBS
    expected = one_at_a_time(served, jobs, **kwargs)
    batcher = ContinuousBatcher(served.model, served.pad_id, served.multi_adapter, max_batch=4, window_s=0.05)
    try:
        made = [make_row(served, *job, **kwargs) for job in jobs]
        for row, _ in made[:3]:
            batcher.submit(row)
        wait(lambda: made[0][0].tokens >= 2)  # decoding has begun
        assert not made[0][0].done
        for row, _ in made[3:]:
            batcher.submit(row)
        for _, answer in made:
            assert answer.ended.wait(60)
        got = [(answer.text, answer.end, row.tokens) for row, answer in made]
    finally:
        batcher.close()
    assert got == expected
    assert [n for *_, n in got] == [job[2] for job in jobs]  # random models never stop early
    stats = batcher.stats
    assert stats.batches >= 2 and max(stats.batch_sizes) > 1 and stats.requests == len(jobs)
    assert stats.tokens == sum(job[2] for job in jobs) and stats.finished == len(jobs)
    assert len(batcher.batch) == 0 and batcher.batch.cache is None  # every row retired


def test_rows_retire_as_they_finish_and_free_their_slot(served):
    """Two slots: a long answer keeps decoding while short ones come and go beside it."""
    batcher = ContinuousBatcher(served.model, served.pad_id, served.multi_adapter, max_batch=2, window_s=0.05)
    try:
        (long, long_answer), *short = [make_row(served, "alpha", q, n) for q, n in
                                       [(QUESTIONS[3], 40), (QUESTIONS[0], 3), (QUESTIONS[2], 3), (QUESTIONS[4], 3)]]
        for row, _ in [(long, long_answer), *short]:
            batcher.submit(row)
        lengths_seen = []
        for row, answer in short:
            assert answer.ended.wait(60)
            lengths_seen.append(long.tokens)
            assert answer.end == ("end", "length") and row.tokens == 3
        assert not long.done and lengths_seen[-1] < 40  # the third short answer ran beside the long one
        assert long_answer.ended.wait(60) and long.tokens == 40
    finally:
        batcher.close()
    assert max(batcher.stats.batch_sizes) == 2 and batcher.stats.batches == 3


def test_cancelled_row_leaves_the_batch_and_a_queued_row_takes_its_slot(served):
    batcher = ContinuousBatcher(served.model, served.pad_id, served.multi_adapter, max_batch=1, window_s=0)
    try:
        long, long_answer = make_row(served, "beta", QUESTIONS[1], 500)
        waiting, answer = make_row(served, "tiny", QUESTIONS[0], 4)
        batcher.submit(long)
        wait(lambda: long.tokens >= 2)
        batcher.submit(waiting)
        time.sleep(0.1)
        assert batcher.queued == 1 and batcher.running == 1  # no free slot
        batcher.cancel(long)
        assert answer.ended.wait(60) and answer.end == ("end", "length")
        assert long.finish_reason == "cancelled" and long.tokens < 500 and long_answer.end is None
        wait(lambda: batcher.running == 0)
    finally:
        batcher.close()
    assert batcher.stats.cancelled == 1 and batcher.stats.finished == 2


def test_a_failing_request_does_not_take_the_others_with_it(served):
    """A prefill that fails (here: any prompt holding a marker token) fails that request alone, whether it
    was admitted with others or arrives while others decode."""
    expected = one_at_a_time(served, [JOBS[4], JOBS[0]])
    model = served.models["alpha"]
    marker = model.tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def boom(module, args):
        if (args[0] == marker).any():
            raise RuntimeError("simulated failure of one request")

    def bad_row():
        answer = Answer()
        return Row(model.chat_prompt([{"role": "user", "content": "x"}]) + [marker], model.tokenizer,
                   model.chat_stop_ids, 5, answer, adapter="a0"), answer

    handle = served.model.get_input_embeddings().register_forward_pre_hook(boom)
    batcher = ContinuousBatcher(served.model, served.pad_id, served.multi_adapter, max_batch=4, window_s=0.3)
    try:
        (good, good_answer), (bad, bad_answer), (other, other_answer) = \
            make_row(served, *JOBS[4]), bad_row(), make_row(served, *JOBS[0])
        for row in (good, bad, other):  # one admission: the three are prefilled together, then one by one
            batcher.submit(row)
        wait(lambda: good.tokens >= 2)
        late, late_answer = bad_row()  # arrives while the others decode
        batcher.submit(late)
        for answer in (bad_answer, late_answer):
            assert answer.ended.wait(60) and answer.end[0] == "error"
            assert "simulated failure of one request" in answer.end[1]
        assert good_answer.ended.wait(60) and other_answer.ended.wait(60)
    finally:
        handle.remove()
        batcher.close()
    assert [(a.text, a.end, r.tokens) for r, a in [(good, good_answer), (other, other_answer)]] == expected
    assert batcher.stats.failed_batches == 2 and batcher.stats.batches == 2


def test_a_row_that_finishes_at_prefill_never_enters_the_decode(served):
    batch = RunningBatch(served.model, served.pad_id, served.multi_adapter)
    row, answer = make_row(served, "tiny", QUESTIONS[0], 1)
    assert batch.admit([row]) == [row] and len(batch) == 0 and batch.cache is None
    assert answer.end == ("end", "length") and row.tokens == 1


def test_growing_layer_gives_what_dynamic_layer_gives_and_copies_nothing_per_step():
    """GrowingLayer (continuous.py) against transformers' DynamicLayer, through what RunningBatch does to a cache:
    prefill, decode steps (which must write into spare room, not copy), a merge, a row cut and a column cut."""
    import torch
    from transformers.cache_utils import DynamicLayer

    from instill.infer.serve.continuous import GrowingLayer

    torch.manual_seed(0)
    grow, plain = GrowingLayer(), DynamicLayer()

    def both(fn):
        for layer in (grow, plain):
            fn(layer)

    def update(n, batch):
        k, v = torch.randn(batch, 2, n, 4), torch.randn(batch, 2, n, 4)
        out = [layer.update(k, v) for layer in (grow, plain)]
        for a, b in zip(*out):
            assert torch.equal(a, b)
        return out[0]

    update(5, 3)  # prefill
    keys, _ = update(1, 3)
    buffer = keys.untyped_storage().data_ptr()
    for _ in range(70):  # past the first buffer's room: it grows once, then again writes in place
        keys, _ = update(1, 3)
    assert keys.shape == (3, 2, 76, 4)
    grown = keys.untyped_storage().data_ptr()
    assert grown != buffer
    update(1, 3)
    assert grow.keys.untyped_storage().data_ptr() == grown  # in place: no copy of the cache
    extra = torch.randn(2, 2, 77, 4), torch.randn(2, 2, 77, 4)  # a merge, as RunningBatch.admit does it

    def merge(layer):
        layer.keys, layer.values = torch.cat([layer.keys, extra[0]]), torch.cat([layer.values, extra[1]])

    both(merge)
    update(1, 5)
    both(lambda layer: layer.batch_select_indices(torch.tensor([0, 2, 4])))  # rows retired
    update(1, 3)

    def cut(layer):  # columns only padding uses, cut as RunningBatch._retire does
        layer.keys, layer.values = layer.keys[:, :, 10:], layer.values[:, :, 10:]

    both(cut)
    keys, values = update(1, 3)
    assert keys.shape == (3, 2, 70, 4) and torch.equal(values, plain.values)
