"""Tests of the recovery recipe's PyTorch code (CPU, a few seconds): run with
`python3 -m pytest recovery/` after `pip install -r recovery/requirements.txt`.

The student forward is checked against the Liger authors' logits (tests/fixtures), and its fast
pieces (banded window attention, chunkwise GLA) against the plain definitions, values and
gradients, at lengths that cross several chunks and windows."""
from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import liger_model as lm  # noqa: E402
import recover  # noqa: E402

FIXTURES = os.path.join(HERE, "..", "tests", "fixtures", "liger")


def first_mismatch(got, want, atol, rtol=0.0):
    bad = ((got - want).abs() > atol + rtol * want.abs()).nonzero()
    if len(bad) == 0:
        return None
    i = tuple(bad[0].tolist())
    return f"first mismatch at {i}: got {got[i].item():.6g}, want {want[i].item():.6g} (of {len(bad)})"


def gla_recurrence(fq, fk, v, log_a):
    """The definition, one token at a time, in float64: S_t = diag(a_t) S_{t-1} + k_t v_tᵀ, o_t = S_tᵀ q_t."""
    B, H, T, d = fq.shape
    K = fk.shape[1]
    r = H // K
    S = torch.zeros(B, K, d, d, dtype=torch.float64)
    out = []
    for t in range(T):
        S = log_a[:, :, t].exp()[..., None] * S + fk[:, :, t, :, None] * v[:, :, t, None, :]
        out.append(torch.einsum("bkrd,bkde->bkre", fq[:, :, t].view(B, K, r, d), S).reshape(B, H, d))
    return torch.stack(out, 2)


def random_gla_inputs(T, seed, B=2, H=4, K=2, d=8):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, d, generator=g, dtype=torch.float64)
    k = 4 * torch.randn(B, K, T, d, generator=g, dtype=torch.float64)  # strong gates: decays down to e^-1 per token
    v = torch.randn(B, K, T, d, generator=g, dtype=torch.float64)
    return torch.softmax(q, -1), torch.softmax(k, -1), v, F.logsigmoid(k) / lm.GATE_NORM


@pytest.mark.parametrize("T", [1, 15, 64, 65, 200])
def test_chunk_gla_equals_the_recurrence(T):
    fq, fk, v, log_a = random_gla_inputs(T, seed=T)
    got, want = lm.chunk_gla(fq, fk, v, log_a), gla_recurrence(fq, fk, v, log_a)
    assert (m := first_mismatch(got, want, 1e-10, 1e-9)) is None, m


def test_chunk_gla_gradients_equal_the_recurrences():
    inputs = [x.requires_grad_() for x in random_gla_inputs(150, seed=3)]
    weight = torch.randn(2, 4, 150, 8, dtype=torch.float64)
    (lm.chunk_gla(*inputs) * weight).sum().backward()
    got = [x.grad.clone() for x in inputs]
    for x in inputs:
        x.grad = None
    (gla_recurrence(*inputs) * weight).sum().backward()
    for name, g, x in zip(("q", "k", "v", "log_a"), got, inputs):
        assert (m := first_mismatch(g, x.grad, 1e-9, 1e-8)) is None, f"d/d{name}: {m}"


@pytest.mark.parametrize("T", [1, 64, 65, 130, 257])
def test_banded_swa_equals_dense_masked_attention(T):
    g = torch.Generator().manual_seed(T)
    q = torch.randn(2, 6, T, 16, generator=g, dtype=torch.float64)
    k = torch.randn(2, 2, T, 16, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, T, 16, generator=g, dtype=torch.float64)
    t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
    mask = (s <= t) & (t - s <= lm.WINDOW)  # keys t-64..t
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), attn_mask=mask)
    assert (m := first_mismatch(lm.banded_swa(q, k, v), want, 1e-12)) is None, m


def load_case(case):
    from safetensors.numpy import load_file
    d = os.path.join(FIXTURES, case)
    w = lm.Weights(json.load(open(os.path.join(d, "config.json"))), load_file(os.path.join(d, "model.safetensors")))
    return w, load_file(os.path.join(d, "reference.safetensors")), d


@pytest.mark.parametrize("case", ["liger_gla", "liger_gla_tied", "liger_qwen2_gla", "liger_gla_lora"])
def test_student_equals_the_authors_logits(case):
    """Window semantics = the authors' full forward (logits_full), within 1e-4 (their own fp32
    code differs from a float64 implementation by up to 1e-4 on the real model)."""
    w, ref, d = load_case(case)
    lora = recover.load_peft(w, os.path.join(d, "adapter")) if case.endswith("_lora") else None
    with torch.no_grad():
        got = lm.logits(w, torch.as_tensor(ref["input_ids"]).long()[None], "student", lora)[0]
    assert (m := first_mismatch(got, torch.as_tensor(ref["logits_full"]), 1e-4)) is None, f"{case}: {m}"


def test_teacher_is_the_plain_llama():
    """Without its window and recurrence the same weights are a Llama: the teacher equals a
    float64 causal softmax attention written out in full."""
    w, ref, _ = load_case("liger_gla")
    ids = torch.as_tensor(ref["input_ids"]).long()[None]
    cos, sin = lm.rope_tables(torch.arange(ids.shape[1]), w.d, w.theta)
    h = w["model.embed_tokens.weight"][ids]
    x = lm.attention_input(w, 0, h)
    q, k, v = (t.double() for t in lm.project(w, 0, x, None))
    q, k = lm.rope(q, cos.double(), sin.double()), lm.rope(k, cos.double(), sin.double())
    k, v = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(w.d)
    scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
    want = torch.softmax(scores, -1) @ v
    got = lm.teacher_attention(w, 0, x, cos, sin).double()
    assert (m := first_mismatch(got, want, 1e-5)) is None, m


def test_sampler_caches_the_teachers_own_log_probs():
    """What the KV-cache sampler stores for position t is the teacher's full-forward top-k."""
    w, ref, _ = load_case("liger_gla")
    prefix = [int(x) for x in ref["input_ids"][:5]]
    ids, top_ids, top_logp = lm.sample_teacher(w, prefix, n_seq=3, length=80, seed=1, top_k_saved=8)
    assert ids.shape == (3, 80) and (ids[:, :5] == torch.tensor(prefix)).all()
    assert not (ids[0] == ids[1]).all(), "sequences sampled alike"
    with torch.no_grad():
        logp = torch.log_softmax(lm.logits(w, ids, "teacher"), -1)[:, 4:]
    want_ids = logp.topk(8, -1).indices
    assert (top_ids.long() == want_ids).float().mean() > 0.99  # near ties may swap
    got = top_logp.float()
    want = logp.gather(-1, top_ids.long())
    assert (m := first_mismatch(got, want, 2e-2)) is None, m  # stored as f16
    # the sampled token is among the 64 most likely (nucleus inside the top 64)
    rank = (logp[:, :-1] > logp[:, :-1].gather(-1, ids[:, 5:, None])).sum(-1)
    assert rank.max() < 64


def test_topk_kl_is_the_kl_when_k_covers_the_vocabulary_and_a_lower_bound_otherwise():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(5, 40, generator=g) * 3, torch.randn(5, 40, generator=g) * 3
    lt = torch.log_softmax(t, -1)
    full = (lt.exp() * (lt - torch.log_softmax(s, -1))).sum(-1)
    top = lt.topk(40, -1)
    assert torch.allclose(lm.topk_kl(s, top.indices, top.values), full, atol=1e-5)
    top = lt.topk(6, -1)
    part = lm.topk_kl(s, top.indices, top.values)
    assert (part <= full + 1e-5).all() and (part >= 0).all()


def test_peft_export_reads_back_with_per_layer_ranks(tmp_path):
    w, _, _ = load_case("liger_gla")
    lora = lm.LoRA(w, [8] * w.L)
    lora.reinit_layer(1, 16, seed=5)
    with torch.no_grad():
        for p in lora.parameters():
            p.normal_()
    recover.write_peft(lora, str(tmp_path))
    cfg = json.load(open(tmp_path / "adapter_config.json"))
    assert cfg["r"] == 8 and cfg["rank_pattern"]["model.layers.1.self_attn.q_proj"] == 16
    back = recover.load_peft(w, str(tmp_path))
    x = torch.randn(3, w.D)
    for i in range(w.L):
        for t in lm.LORA_TARGETS:
            want = lora.delta(i, t, x)
            got = back.delta(i, t, x)
            assert (m := first_mismatch(got, want, 0.02 * want.abs().max().item())) is None, f"{i} {t}: {m}"
