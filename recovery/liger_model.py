"""SmolLM2 (a Llama) run two ways from the same weights, in PyTorch on the CPU:

- the teacher: the plain model, softmax attention over the whole causal context;
- the student: Liger-GLA in window semantics, every attention replaced by
  `0.5 · SWA(keys t-64..t) + 0.5 · GLA` (docs/math.md), plus LoRA on q/k/v.

Both are written for training speed on a CPU: the sliding window as banded blocks of 64 queries
against 128 keys (not a dense T×T mask), and the GLA chunkwise as matrix products over sub-chunks
(as flash-linear-attention's `chunk_gla`), so a token costs the same at any sequence length.

Shapes: B sequences, T tokens, D hidden, H query heads, K kv heads, r = H / K, d head dim,
V vocabulary, n chunks of C tokens, m sub-chunks of c tokens.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

WINDOW = 64       # SWA keys t-64..t (65 keys)
GATE_NORM = 16.0  # log a_t = logsigmoid(k_t) / 16
MIX = 0.5         # o = 0.5 · SWA + 0.5 · GLA
CHUNK = 64        # GLA chunk: the state is carried between chunks
SUB = 16          # GLA sub-chunk: pairwise decays inside one, matrix products between them
LORA_TARGETS = ("q_proj", "k_proj", "v_proj")


class Weights:
    """HF-named f32 tensors plus the config values the forward needs."""

    def __init__(self, cfg: dict, state: dict):
        self.L = cfg["num_hidden_layers"]
        self.H = cfg["num_attention_heads"]
        self.K = cfg["num_key_value_heads"]
        self.D = cfg["hidden_size"]
        self.d = cfg.get("head_dim") or self.D // self.H
        self.eps = cfg["rms_norm_eps"]
        self.theta = cfg.get("rope_theta", 10000.0)
        self.t = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
        tied = cfg.get("tie_word_embeddings", False) or "lm_head.weight" not in self.t
        self.head = self.t["model.embed_tokens.weight" if tied else "lm_head.weight"]

    def __getitem__(self, name):
        return self.t[name]

    def get(self, name):
        return self.t.get(name)


class LoRA(torch.nn.Module):
    """Per layer and target: A [rank, in] (random / √in), B [out, rank] (zero: the student starts
    as plain Liger); delta(x) = (alpha / rank) · x Aᵀ Bᵀ. A layer may have its own rank."""

    def __init__(self, w: Weights, ranks: list[int], alpha_per_rank: float = 1.0, seed: int = 0):
        super().__init__()
        self.ranks = list(ranks)
        self.alpha_per_rank = alpha_per_rank  # alpha = rank · this (PEFT's alpha / r = 1 by default)
        self.A = torch.nn.ParameterDict()
        self.B = torch.nn.ParameterDict()
        g = torch.Generator().manual_seed(seed)
        for i in range(w.L):
            for t in LORA_TARGETS:
                out, inp = w[f"model.layers.{i}.self_attn.{t}.weight"].shape
                self.A[f"{i}_{t}"] = torch.nn.Parameter(torch.randn(ranks[i], inp, generator=g) / math.sqrt(inp))
                self.B[f"{i}_{t}"] = torch.nn.Parameter(torch.zeros(out, ranks[i]))

    def layer_parameters(self, i):
        return [p for t in LORA_TARGETS for p in (self.A[f"{i}_{t}"], self.B[f"{i}_{t}"])]

    def delta(self, i, t, x):
        key = f"{i}_{t}"
        return (x @ self.A[key].t()) @ self.B[key].t() * self.alpha_per_rank

    def reinit_layer(self, i, rank, seed):
        """A fresh adapter of another rank for layer i (stage 1 raises the rank of a hard layer)."""
        g = torch.Generator().manual_seed(seed)
        self.ranks[i] = rank
        for t in LORA_TARGETS:
            inp, out = self.A[f"{i}_{t}"].shape[1], self.B[f"{i}_{t}"].shape[0]
            self.A[f"{i}_{t}"] = torch.nn.Parameter(torch.randn(rank, inp, generator=g) / math.sqrt(inp))
            self.B[f"{i}_{t}"] = torch.nn.Parameter(torch.zeros(out, rank))


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_tables(positions, d, theta):
    """cos, sin [T, d] for HF's rotate_half RoPE."""
    inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = positions.float()[:, None] * inv[None, :]
    return torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)


def rope(x, cos, sin):
    """x [..., T, d]."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def project(w, i, x, lora):
    """q [B,H,T,d], k and v [B,K,T,d] of layer i (with biases where the model has them)."""
    B, T, _ = x.shape
    p = f"model.layers.{i}.self_attn."
    out = []
    for t, heads in zip(LORA_TARGETS, (w.H, w.K, w.K)):
        y = F.linear(x, w[p + t + ".weight"], w.get(p + t + ".bias"))
        if lora is not None:
            y = y + lora.delta(i, t, x)
        out.append(y.view(B, T, heads, w.d).transpose(1, 2))
    return out


def banded_swa(q, k, v):
    """Softmax attention over keys t-64..t. q [B,H,T,d], k/v [B,K,T,d] (RoPE'd) -> [B,H,T,d].
    Query block j (64 rows) sees the keys of blocks j-1 and j (128), masked to the window."""
    B, H, T, d = q.shape
    K = k.shape[1]
    W = WINDOW
    pad = (-T) % W
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
    n = q.shape[2] // W
    prev = lambda x: F.pad(x, (0, 0, W, 0))[:, :, : n * W]  # noqa: E731  (block j-1 at block j)
    keys = torch.cat([prev(k).view(B, K, n, W, d), k.view(B, K, n, W, d)], 3)    # [B,K,n,2W,d]
    vals = torch.cat([prev(v).view(B, K, n, W, d), v.view(B, K, n, W, d)], 3)
    qb = q.view(B, K, H // K, n, W, d)
    scores = qb @ keys[:, :, None].transpose(-1, -2) / math.sqrt(d)              # [B,K,r,n,W,2W]
    t = torch.arange(n)[:, None, None] * W + torch.arange(W)[None, :, None]       # [n,W,1]
    s = torch.arange(n)[:, None, None] * W - W + torch.arange(2 * W)[None, None, :]  # [n,1,2W]
    allowed = (s <= t) & (t - s <= W) & (s >= 0)
    scores = scores.masked_fill(~allowed, float("-inf"))
    o = torch.softmax(scores, -1) @ vals[:, :, None]                              # [B,K,r,n,W,d]
    return o.reshape(B, H, n * W, d)[:, :, :T]


def chunk_gla(fq, fk, v, log_a):
    """S_t = diag(a_t) S_{t-1} + fk_t v_tᵀ, o_t = S_tᵀ fq_t, one state per kv head.
    fq [B,H,T,d]; fk, v, log_a [B,K,T,d] -> o [B,H,T,d]. Every exponent is ≤ 0 (stable in f32):
    decays are taken relative to the chunk start (state), the sub-chunk start (earlier sub-chunks)
    or pairwise (inside a sub-chunk)."""
    B, H, T, d = fq.shape
    K = fk.shape[1]
    r = H // K
    pad = (-T) % CHUNK
    if pad:  # zero keys with zero log-gates leave the state as it is
        fq, fk, v, log_a = (F.pad(x, (0, 0, 0, pad)) for x in (fq, fk, v, log_a))
    n, C, c = fq.shape[2] // CHUNK, CHUNK, SUB
    m = C // c
    q = fq.view(B, K, r, n, C, d)
    k, vv = fk.view(B, K, n, C, d), v.view(B, K, n, C, d)
    G = log_a.view(B, K, n, C, d).cumsum(-2)                     # decay since the chunk's start
    G_last = G[..., -1:, :]                                      # [B,K,n,1,d]
    # the state entering each chunk: S_{j+1} = diag(exp(G_last_j)) S_j + U_j
    U = (k * (G_last - G).exp()).transpose(-1, -2) @ vv          # [B,K,n,d,d]
    decay = G_last.exp().transpose(-1, -2)                        # [B,K,n,d,1]
    S = fq.new_zeros(B, K, d, d)
    entering = []
    for j in range(n):
        entering.append(S)
        S = decay[:, :, j] * S + U[:, :, j]
    S_in = torch.stack(entering, 2)                              # [B,K,n,d,d]
    o = (q * G.exp()[:, :, None]) @ S_in[:, :, None]             # [B,K,r,n,C,d]
    # earlier sub-chunks of the same chunk, relative to the query sub-chunk's start
    Gs = G.view(B, K, n, m, c, d)
    G_ref = Gs[..., :1, :]                                       # [B,K,n,m,1,d]
    q_sub = q.view(B, K, r, n, m, c, d)
    q_rel = q_sub * (Gs - G_ref).exp()[:, :, None]
    earlier = torch.arange(C)[None, :] < (torch.arange(m) * c)[:, None]           # [m(query), C(key)]
    k_exp = (G_ref - G[:, :, :, None]).masked_fill(~earlier[..., None], float("-inf"))
    k_rel = k[:, :, :, None] * k_exp.exp()                       # [B,K,n,m,C,d]
    o_earlier = (q_rel @ k_rel[:, :, None].transpose(-1, -2)) @ vv[:, :, None, :, None]
    # inside a sub-chunk, pairwise: A[t,s] = Σ_i q_ti k_si exp(G_ti - G_si), s <= t
    tri = torch.tril(torch.ones(c, c, dtype=torch.bool))
    pair = (Gs[..., :, None, :] - Gs[..., None, :, :]).masked_fill(~tri[..., None], float("-inf"))
    k_pair = k.view(B, K, n, m, 1, c, d) * pair.exp()           # [B,K,n,m,c(t),c(s),d]
    A = torch.einsum("bkrnmti,bknmtsi->bkrnmts", q_sub, k_pair)
    o_inside = A @ vv.view(B, K, 1, n, m, c, d)
    o = o + (o_earlier + o_inside).view(B, K, r, n, C, d)
    return o.reshape(B, H, n * C, d)[:, :, :T]


def teacher_attention(w, i, x, cos, sin):
    q, k, v = project(w, i, x, None)
    o = F.scaled_dot_product_attention(rope(q, cos, sin), rope(k, cos, sin), v, is_causal=True,
                                       enable_gqa=True)
    return o


def student_attention(w, i, x, cos, sin, lora):
    q, k, v = project(w, i, x, lora)
    swa = banded_swa(rope(q, cos, sin), rope(k, cos, sin), v)
    gla = chunk_gla(torch.softmax(q, -1), torch.softmax(k, -1), v, F.logsigmoid(k) / GATE_NORM)
    return MIX * swa + MIX * gla


def after_attention(w, i, h, o):
    """h + o_proj(o), then the SwiGLU MLP block. o [B,H,T,d] -> h [B,T,D]."""
    B, H, T, d = o.shape
    p = f"model.layers.{i}."
    h = h + F.linear(o.transpose(1, 2).reshape(B, T, H * d), w[p + "self_attn.o_proj.weight"])
    x = rms_norm(h, w[p + "post_attention_layernorm.weight"], w.eps)
    up = F.silu(F.linear(x, w[p + "mlp.gate_proj.weight"])) * F.linear(x, w[p + "mlp.up_proj.weight"])
    return h + F.linear(up, w[p + "mlp.down_proj.weight"])


def attention_input(w, i, h):
    return rms_norm(h, w[f"model.layers.{i}.input_layernorm.weight"], w.eps)


def hidden(w, ids, mode, lora=None):
    """ids [B,T] -> final normed hidden states [B,T,D]; mode 'teacher' or 'student'."""
    cos, sin = rope_tables(torch.arange(ids.shape[1]), w.d, w.theta)
    h = w["model.embed_tokens.weight"][ids]
    for i in range(w.L):
        x = attention_input(w, i, h)
        o = teacher_attention(w, i, x, cos, sin) if mode == "teacher" else \
            student_attention(w, i, x, cos, sin, lora)
        h = after_attention(w, i, h, o)
    return rms_norm(h, w["model.norm.weight"], w.eps)


def logits(w, ids, mode, lora=None):
    """ids [B,T] -> [B,T,V]."""
    return hidden(w, ids, mode, lora) @ w.head.t()


def token_nll(w, ids, mode, lora=None, chunk=256):
    """Negative log-likelihood of ids[:, 1:] [B,T-1], the vocabulary projected in slices of
    positions (a [B,T,V] f32 tensor for 2,048 tokens is 400 MB)."""
    with torch.no_grad():
        hs = hidden(w, ids, mode, lora)[:, :-1]
        out = []
        for s in range(0, hs.shape[1], chunk):
            lg = hs[:, s:s + chunk] @ w.head.t()
            out.append(F.cross_entropy(lg.transpose(1, 2), ids[:, 1 + s:1 + s + chunk], reduction="none"))
        return torch.cat(out, 1)


@torch.inference_mode()
def sample_teacher(w, prefix, n_seq, length, seed, top_k_saved=32, top_p=0.95, top_k_sampled=64,
                   greedy=False):
    """The teacher writes n_seq sequences of `length` tokens after the common `prefix`, with a
    KV cache, temperature 1, nucleus sampling inside its 64 most likely tokens (no sort of the
    vocabulary). Returns ids [n_seq, length] and, for each position t ≥ len(prefix)-1, the
    teacher's `top_k_saved` most likely next tokens and their log-probabilities (full softmax):
    top_ids [n_seq, length-len(prefix)+1, k] int32, top_logp [same] f16.
    greedy=True: the most likely token each time instead."""
    g = torch.Generator().manual_seed(seed)
    P = len(prefix)
    ids = torch.empty(n_seq, length, dtype=torch.long)
    ids[:, :P] = torch.as_tensor(prefix)
    n_pred = length - P + 1
    top_ids = torch.empty(n_seq, n_pred, top_k_saved, dtype=torch.int32)
    top_logp = torch.empty(n_seq, n_pred, top_k_saved, dtype=torch.float16)
    cos, sin = rope_tables(torch.arange(length), w.d, w.theta)
    cache_k = [torch.empty(n_seq, w.K, length, w.d) for _ in range(w.L)]
    cache_v = [torch.empty(n_seq, w.K, length, w.d) for _ in range(w.L)]
    start, cur = 0, ids[:1, :P]  # the prefix once: its cache rows are broadcast to every sequence
    for pos in range(P - 1, length):
        T = cur.shape[1]
        rows = 1 if start == 0 else n_seq
        c, s = cos[start:start + T], sin[start:start + T]
        h = w["model.embed_tokens.weight"][cur]
        for i in range(w.L):
            q, k, v = project(w, i, attention_input(w, i, h), None)
            cache_k[i][:, :, start:start + T] = rope(k, c, s)
            cache_v[i][:, :, start:start + T] = v
            o = F.scaled_dot_product_attention(rope(q, c, s), cache_k[i][:rows, :, :start + T],
                                               cache_v[i][:rows, :, :start + T], is_causal=T > 1,
                                               enable_gqa=True)
            h = after_attention(w, i, h, o)
        lg = rms_norm(h[:, -1], w["model.norm.weight"], w.eps) @ w.head.t()
        logp = torch.log_softmax(lg, -1).expand(n_seq, -1)
        best_logp, best_ids = logp.topk(top_k_sampled, -1)      # sorted, most likely first
        top_ids[:, pos - P + 1] = best_ids[:, :top_k_saved].int()
        top_logp[:, pos - P + 1] = best_logp[:, :top_k_saved].half()
        if pos == length - 1:
            break
        p = best_logp.exp()
        p = p * ((p.cumsum(-1) - p) < top_p)
        nxt = best_ids[:, :1] if greedy else best_ids.gather(-1, torch.multinomial(p, 1, generator=g))
        ids[:, pos + 1] = nxt[:, 0]
        start += T
        cur = nxt
    return ids, top_ids, top_logp


def topk_kl(student_logits, top_ids, top_logp):
    """KL(teacher ‖ student) per position on the teacher's top-k tokens plus one bucket for the
    rest of the vocabulary (exact when k = V, a lower bound otherwise).
    student_logits [N,V], top_ids [N,k] long, top_logp [N,k] f32 -> [N]."""
    ls = torch.log_softmax(student_logits, -1)
    ls_top = ls.gather(-1, top_ids)
    pt = top_logp.exp()
    kl = (pt * (top_logp - ls_top)).sum(-1)
    pt_rest = (1 - pt.sum(-1)).clamp_min(1e-8)
    ps_rest = (1 - ls_top.exp().sum(-1)).clamp_min(1e-8)
    return kl + pt_rest * (pt_rest.log() - ps_rest.log())
