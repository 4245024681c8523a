"""Score mode: rank candidate labels by the model's log-likelihood of each answer after the prompt.

For every prompt and candidate label the answer text is what the chat template writes for an
assistant reply holding that label (``label_template``, e.g. ``\\boxed{{label}}``), up to and
including the end-of-turn token: the exact tokens the model was trained to produce. Scoring the
end-of-turn too makes a label that is a prefix of another (``体育`` vs ``体育新闻``) a complete
answer, not a partial one.

Cost: each batch of prompts runs once through the model with the KV cache on; then the answers
of all candidates of a prompt run as one packed row on top of that cache (no generation, no copy
of the cache: one extra forward of a few tokens per candidate). Position ids come from the
attention mask, so left and right padding and any batch size give the same scores up to float
rounding.

The score of a label is the summed log-probability of its answer tokens; ``confidence`` is the
softmax of those sums over the row's candidates (a probability that sums to 1 over them).

``batch_calibrate`` removes the model's bias toward some labels (a base model asked to classify
often picks one label for almost every text) by dividing each label's probability by its mean
over the evaluated rows: batch calibration, Zhou et al., "Batch Calibration", ICLR 2024. It uses
no gold labels and no extra forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from instill.data.tokenize import cut_middle
from instill.errors import TemplateError
from instill.infer.engine import Generator, pad_batch


@dataclass
class LabelScore:
    label: str  # the best candidate
    confidence: float  # its softmax probability over the row's candidates
    scores: dict[str, float]  # candidate -> summed answer log-probability
    truncated: bool = False  # the prompt was cut to max_prompt_tokens
    calibrated: dict[str, float] | None = None  # candidate -> calibrated log-score (batch_calibrate)


def answer_ids(generator: Generator, conversation: list[dict], answer: str, prompt_text: str,
               prompt_ids: list[int], tools: list[dict] | None = None) -> list[int]:
    """Token ids the template adds for an assistant reply `answer`, through its end-of-turn."""
    full = generator.template.render([*conversation, {"role": "assistant", "content": answer}], tools)
    if not full.startswith(prompt_text):
        raise TemplateError(f"template '{generator.template.name}' is not prefix-stable: the prompt is not a prefix "
                            "of the conversation with its answer; choose a named template (e.g. template: qwen)")
    continuation = full[len(prompt_text):]
    eot = generator.template.end_of_turn
    if eot and eot in continuation[len(answer):]:
        continuation = continuation[: continuation.index(eot, len(answer)) + len(eot)]
    joint = generator.encode(prompt_text + continuation)
    if joint[: len(prompt_ids)] == prompt_ids:  # as training tokenized it: the full text at once
        return joint[len(prompt_ids):]
    return generator.encode(continuation)


@torch.inference_mode()
def continuation_logprobs(model, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]],
                          pad_id: int, batch_size: int = 8, padding_side: str = "left",
                          progress: bool = False) -> list[list[float]]:
    """Summed log p(continuation | prompt) for every continuation of every prompt.

    Prompts are batched (`batch_size`, padded on `padding_side`) and run once with the cache on.
    Then all continuations of a prompt are packed into one row on top of its cache: a 4D mask lets
    each continuation see the prompt and its own earlier tokens only, and its positions restart
    where the prompt ends. The prompt's cache is thus never copied per candidate.
    """
    was_training = model.training
    model.eval()
    device = model.device
    dtype = model.get_input_embeddings().weight.dtype
    out: list[list[float]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    with tqdm(total=len(prompts), desc="Scoring", unit="sample", disable=not progress, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = pad_batch([prompts[i] for i in idx], pad_id, padding_side)
            ids, mask = ids.to(device), mask.to(device)
            lengths = mask.sum(-1)
            last = torch.where(mask.bool(), torch.arange(ids.shape[1], device=device), -1).max(-1).values
            result = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                           use_cache=True, logits_to_keep=last[:, None])
            first = torch.log_softmax(result.logits[:, 0].float(), dim=-1)  # (B, V): each answer's first token
            tails = _packed_pass(model, result.past_key_values, mask, lengths,
                                 [continuations[i] for i in idx], pad_id, dtype)
            for b, i in enumerate(idx):
                for j, tokens in enumerate(continuations[i]):
                    out[i].append(first[b, tokens[0]].item() + tails[b][j])
            bar.update(len(idx))
    model.train(was_training)
    return out


def _packed_pass(model, cache, prompt_mask: torch.Tensor, lengths: torch.Tensor,
                 continuations: list[Sequence[Sequence[int]]], pad_id: int, dtype: torch.dtype) -> list[list[float]]:
    """log p of every continuation token after the first, one packed row per prompt (see above)."""
    device = prompt_mask.device
    segments = [[list(c[:-1]) for c in row] for row in continuations]  # a token's output predicts the next one
    width = max(sum(map(len, row)) for row in segments)
    if width == 0:  # every continuation is a single token
        return [[0.0] * len(row) for row in continuations]
    batch = len(segments)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    positions = torch.zeros((batch, width), dtype=torch.long)
    segment = torch.full((batch, width), -1, dtype=torch.long)
    for b, row in enumerate(segments):
        offset = 0
        for j, tokens in enumerate(row):
            span = slice(offset, offset + len(tokens))
            ids[b, span] = torch.tensor(tokens, dtype=torch.long)
            positions[b, span] = int(lengths[b]) + torch.arange(len(tokens))
            segment[b, span] = j
            offset += len(tokens)
    ids, positions, segment = ids.to(device), positions.to(device), segment.to(device)
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    own = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0) & causal
    own |= torch.eye(width, dtype=torch.bool, device=device)  # padding rows see themselves: no all-masked row
    allowed = torch.cat([prompt_mask.bool()[:, None, :].expand(-1, width, -1), own], dim=-1)[:, None]
    additive = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    logits = model(input_ids=ids, attention_mask=additive, position_ids=positions, past_key_values=cache,
                   use_cache=True).logits
    sums = []
    for b, row in enumerate(continuations):
        logp = torch.log_softmax(logits[b].float(), dim=-1)  # one row at a time: (width, V) at most
        values, offset = [], 0
        for tokens in row:
            n = len(tokens) - 1
            targets = torch.tensor(list(tokens[1:]), dtype=torch.long, device=device)
            values.append(logp[offset:offset + n].gather(-1, targets[:, None]).sum().item() if n else 0.0)
            offset += n
        sums.append(values)
    return sums


def score_labels(generator: Generator, conversations: list[list[dict]], candidates: Sequence[Sequence[str]],
                 label_template: str = "{label}", batch_size: int = 8, padding_side: str = "left",
                 max_prompt_tokens: int | None = None, tools: Sequence[list[dict] | None] | None = None,
                 progress: bool = False) -> list[LabelScore]:
    """The most likely candidate label of each conversation (ending with a user turn), with scores."""
    tools = tools or [None] * len(conversations)
    prompts, answers, cut = [], [], []
    for conversation, labels, tool in zip(conversations, candidates, tools):
        text = generator.render(conversation, tool)
        ids = generator.encode(text)
        answers.append([answer_ids(generator, conversation, label_template.replace("{label}", label), text, ids, tool)
                        for label in labels])
        cut.append(max_prompt_tokens is not None and len(ids) > max_prompt_tokens)
        prompts.append(cut_middle(ids, max_prompt_tokens) if cut[-1] else ids)
    sums = continuation_logprobs(generator.model, prompts, answers, generator.pad_id, batch_size, padding_side,
                                 progress=progress)
    results = []
    for labels, values, truncated in zip(candidates, sums, cut):
        label, confidence = _best(dict(zip(labels, values)))
        results.append(LabelScore(label, confidence, dict(zip(labels, values)), truncated))
    return results


def _best(scores: dict[str, float]) -> tuple[str, float]:
    """The top candidate and its softmax probability over the candidates."""
    probs = _softmax(scores)
    label = max(probs, key=probs.__getitem__)
    return label, probs[label]


def _softmax(scores: dict[str, float]) -> dict[str, float]:
    top = max(scores.values())
    exp = {k: math.exp(v - top) for k, v in scores.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def batch_calibrate(results: Sequence[LabelScore]) -> tuple[list[LabelScore], dict[str, float]]:
    """Re-rank each row by log p(label | row) - log prior(label), prior = mean p(label | row) over rows.

    p is normalised over each row's own candidates; a label's prior averages the rows that offer
    it. Returns the re-ranked results (raw scores kept, calibrated ones added) and the prior.
    """
    probs = [_softmax(r.scores) for r in results]
    seen: dict[str, list[float]] = {}
    for row in probs:
        for label, p in row.items():
            seen.setdefault(label, []).append(p)
    prior = {label: sum(ps) / len(ps) for label, ps in seen.items()}
    calibrated = []
    for r, row in zip(results, probs):
        adjusted = {k: math.log(max(p, 1e-300)) - math.log(prior[k]) for k, p in row.items()}
        label, confidence = _best(adjusted)
        calibrated.append(LabelScore(label, confidence, r.scores, r.truncated, adjusted))
    return calibrated, prior
