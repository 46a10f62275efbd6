#!/usr/bin/env python3
"""Recover SmolLM2-135M-Instruct as a Liger-GLA model on a CPU: LoRA on q/k/v, in two stages as
LoLCATs (arXiv 2410.10254), from text the teacher (the same weights as a plain Llama) writes itself.

  selftest                 the student forward against the Liger authors' logits (tests/fixtures)
  sample                   teacher text + its top-k next-token log-probs, in resumable parts
  stage1                   per-layer attention transfer (MSE to the softmax attention's output)
  stage2                   end-to-end KL(teacher ‖ student) on every position, time-boxed
  export                   the PEFT adapter (bf16) the converter merges: `liger convert --lora`
  evaluate                 perplexity of teacher and student on held-out text, along the context
  all                      sample, stage1, stage2, export, evaluate (each resumes where it stopped)

Everything lives in --work (default recovery/work): a cut-off run goes on where it was when the
same command runs again.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import liger_model as lm  # noqa: E402
from gguf_weights import read_llama_gguf  # noqa: E402

# `<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n
# <|im_start|>user\n` in SmolLM2's tokenizer: the teacher writes a user's question, then its answer.
CHAT_PREFIX = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
               407, 19712, 8182, 2, 198, 1, 4093, 198]
ENDOFTEXT = 0  # <|endoftext|>: a document starts


def log(work, msg):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    with open(os.path.join(work, "log.txt"), "a") as f:
        f.write(line + "\n")


def save_atomic(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_model(a):
    cfg, state, _ = read_llama_gguf(a.gguf)
    return lm.Weights(cfg, state)


def train_parts(work):
    parts = sorted(glob.glob(os.path.join(work, "data", "train_*.pt")))
    if not parts:
        raise SystemExit(f"no teacher samples in {work}/data: run `sample` first")
    loaded = [torch.load(p) for p in parts]
    return {k: torch.cat([d[k] for d in loaded]) for k in ("ids", "top_ids", "top_logp")}


def heldout(work):
    path = os.path.join(work, "data", "heldout.pt")
    if not os.path.exists(path):
        raise SystemExit(f"no held-out samples in {work}/data: run `sample` first")
    return torch.load(path)


# ---------------------------------------------------------------- selftest

def cmd_selftest(a):
    """The student forward (no LoRA, and with the fixture's LoRA) against the authors' logits."""
    from safetensors.numpy import load_file
    worst = 0.0
    for case in ("liger_gla", "liger_gla_tied", "liger_qwen2_gla", "liger_gla_lora"):
        d = os.path.join(a.fixtures, "liger", case)
        cfg = json.load(open(os.path.join(d, "config.json")))
        w = lm.Weights(cfg, load_file(os.path.join(d, "model.safetensors")))
        ref = load_file(os.path.join(d, "reference.safetensors"))
        lora = load_peft(w, os.path.join(d, "adapter")) if case.endswith("_lora") else None
        with torch.no_grad():
            got = lm.logits(w, torch.as_tensor(ref["input_ids"]).long()[None], "student", lora)[0]
        diff = (got - torch.as_tensor(ref["logits_full"])).abs().max().item()
        worst = max(worst, diff)
        print(f"{case:16s} T={len(ref['input_ids'])}: max |logits - authors' logits_full| = {diff:.2e}")
    if a.gguf:
        d = os.path.join(a.fixtures, "liger-real", "smollm2_gla")
        w = load_model(a)
        ref = load_file(os.path.join(d, "reference.safetensors"))
        full = load_file(os.path.join(d, "logits_full.safetensors"))["logits_full"]
        with torch.no_grad():
            got = lm.logits(w, torch.as_tensor(ref["input_ids"]).long()[None], "student")[0]
        diff = (got[torch.as_tensor(ref["rows"]).long()] - torch.as_tensor(full)).abs().max().item()
        worst = max(worst, diff)
        print(f"{'smollm2 (real)':16s} T={len(ref['input_ids'])}: max |diff| at the stored rows = {diff:.2e}")
    ok = worst <= a.tolerance
    print(f"selftest: worst {worst:.2e} (tolerance {a.tolerance:.0e}) -> {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def load_peft(w, adapter_dir):
    """A PEFT adapter (uniform rank, or rank_pattern) as a LoRA module."""
    from safetensors.torch import load_file
    cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    t = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    ranks = []
    for i in range(w.L):
        ranks.append(t[f"base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight"].shape[0])
    lora = lm.LoRA(w, ranks)
    scales = {}
    with torch.no_grad():
        for i in range(w.L):
            for tgt in lm.LORA_TARGETS:
                p = f"base_model.model.model.layers.{i}.self_attn.{tgt}"
                lora.A[f"{i}_{tgt}"].copy_(t[p + ".lora_A.weight"].float())
                lora.B[f"{i}_{tgt}"].copy_(t[p + ".lora_B.weight"].float())
                module = f"model.layers.{i}.self_attn.{tgt}"
                r = (cfg.get("rank_pattern") or {}).get(module, cfg["r"])
                alpha = (cfg.get("alpha_pattern") or {}).get(module, cfg["lora_alpha"])
                scales[(i, tgt)] = alpha / r
    if len(set(scales.values())) != 1:
        raise SystemExit("adapters with per-module alpha / r ratios are not supported here")
    lora.alpha_per_rank = next(iter(scales.values()))
    return lora


# ---------------------------------------------------------------- sample

def sample_part(a, w, name, prefix, n_seq, length, seed):
    """Teacher samples saved as data/<name>.pt (kept if already there). A prefix shorter than the
    chat prefix has its first predictions dropped, so that prediction j of every part is of
    token len(CHAT_PREFIX) + j."""
    path = os.path.join(a.work, "data", f"{name}.pt")
    if os.path.exists(path):
        return
    t0 = time.time()
    ids, top_ids, top_logp = lm.sample_teacher(w, prefix, n_seq, length, seed=seed)
    drop = len(CHAT_PREFIX) - len(prefix)
    save_atomic({"ids": ids, "top_ids": top_ids[:, drop:], "top_logp": top_logp[:, drop:]}, path)
    n = (length - len(prefix)) * n_seq
    log(a.work, f"sample: {name} {tuple(ids.shape)} in {time.time() - t0:.0f}s ({n / (time.time() - t0):.0f} tok/s)")


def cmd_sample(a):
    """Chats from the chat prefix (held-out ones first), then free text: documents the teacher
    writes from <|endoftext|> alone (web-like prose, lists, code), so that the student also
    reads text that is not a chat."""
    os.makedirs(os.path.join(a.work, "data"), exist_ok=True)
    w = load_model(a)
    t_start = time.time()
    sample_part(a, w, "heldout", CHAT_PREFIX, a.heldout_seqs, a.heldout_len, seed=10_000)
    parts = [(f"train_{p:03d}", CHAT_PREFIX, p) for p in range(a.parts)] + \
        [(f"train_free_{p:03d}", [ENDOFTEXT], 1000 + p) for p in range(a.free_parts)]
    for name, prefix, seed in parts:
        if time.time() - t_start > a.sample_minutes * 60:
            log(a.work, f"sample: time box reached before {name}")
            break
        sample_part(a, w, name, prefix, a.sample_batch, a.seq, seed)
    return 0


# ---------------------------------------------------------------- stage 1

def relative_mse(w, i, x, target, cos, sin, lora, batch=4):
    with torch.no_grad():
        err = power = 0.0
        for s in range(0, x.shape[0], batch):
            o = lm.student_attention(w, i, x[s:s + batch], cos, sin, lora)
            err += (o - target[s:s + batch]).pow(2).sum().item()
            power += target[s:s + batch].pow(2).sum().item()
        return err / power


def train_layer(w, i, x, target, cos, sin, lora, steps, lr, batch, seed):
    """-> seconds per step."""
    t0 = time.time()
    params = lora.layer_parameters(i)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        j = torch.randint(0, x.shape[0], (batch,), generator=g)
        loss = F.mse_loss(lm.student_attention(w, i, x[j], cos, sin, lora), target[j])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return (time.time() - t0) / max(steps, 1)


def cmd_stage1(a):
    """Layer by layer on the teacher's own hidden states: the student's attention (with this
    layer's LoRA) trained to give the teacher's softmax attention output (before o_proj)."""
    out_dir = os.path.join(a.work, "stage1")
    os.makedirs(out_dir, exist_ok=True)
    w = load_model(a)
    torch.manual_seed(0)
    data = train_parts(a.work)["ids"][: a.seqs]
    held = heldout(a.work)["ids"][: a.heldout_seqs1, : data.shape[1]]
    ids = torch.cat([data, held])
    n_train = data.shape[0]
    cos, sin = lm.rope_tables(torch.arange(ids.shape[1]), w.d, w.theta)
    lora = lm.LoRA(w, [a.rank] * w.L)
    t0 = time.time()
    seconds_per_step = None  # measured on the first layer trained; sizes the rest to the time box
    with torch.no_grad():
        h = w["model.embed_tokens.weight"][ids]
    for i in range(w.L):
        with torch.no_grad():
            x = lm.attention_input(w, i, h)
            target = torch.cat([lm.teacher_attention(w, i, x[s:s + 8], cos, sin) for s in range(0, len(x), 8)])
        path = os.path.join(out_dir, f"layer_{i:02d}.pt")
        if os.path.exists(path):
            saved = torch.load(path)
            if saved["rank"] != lora.ranks[i]:
                lora.reinit_layer(i, saved["rank"], seed=i)
            with torch.no_grad():
                for p, v in zip(lora.layer_parameters(i), saved["params"]):
                    p.copy_(v)
            log(a.work, f"stage1: layer {i} resumed (held-out rel. MSE {saved['rel_mse']:.3f}, rank {saved['rank']})")
        else:
            t_layer = time.time()
            steps = a.steps
            if seconds_per_step:  # this layer's share of what is left of the time box
                share = (a.stage1_minutes * 60 - (time.time() - t0)) / (w.L - i)
                steps = max(10, min(a.steps, int(share / seconds_per_step)))
            before = relative_mse(w, i, x[n_train:], target[n_train:], cos, sin, lora)
            seconds_per_step = train_layer(w, i, x[:n_train], target[:n_train], cos, sin, lora, steps, a.lr1,
                                           a.batch1, seed=i)
            err = relative_mse(w, i, x[n_train:], target[n_train:], cos, sin, lora)
            rank = lora.ranks[i]
            share = (a.stage1_minutes * 60 - (time.time() - t0)) / (w.L - i)
            hard_fits = share > 2 * steps * seconds_per_step * 1.5  # the retrain at twice the rank and steps
            if err > a.hard_threshold and a.hard_rank > rank and hard_fits:
                # a hard layer: twice the rank and twice the steps; keep whichever is better
                kept = [p.detach().clone() for p in lora.layer_parameters(i)]
                lora.reinit_layer(i, a.hard_rank, seed=100 + i)
                train_layer(w, i, x[:n_train], target[:n_train], cos, sin, lora, 2 * steps, a.lr1, a.batch1,
                            seed=100 + i)
                err_hard = relative_mse(w, i, x[n_train:], target[n_train:], cos, sin, lora)
                log(a.work, f"stage1: layer {i} is hard ({err:.3f} at rank {rank}): rank {a.hard_rank} gives {err_hard:.3f}")
                if err_hard < err:
                    err, rank = err_hard, a.hard_rank
                else:
                    lora.reinit_layer(i, rank, seed=i)
                    with torch.no_grad():
                        for p, v in zip(lora.layer_parameters(i), kept):
                            p.copy_(v)
            save_atomic({"params": [p.detach().clone() for p in lora.layer_parameters(i)], "rank": rank,
                         "rel_mse": err, "rel_mse_before": before}, path)
            log(a.work, f"stage1: layer {i}: held-out rel. MSE {before:.3f} -> {err:.3f} (rank {rank}, {steps} steps, "
                        f"{time.time() - t_layer:.0f}s, {time.time() - t0:.0f}s in all)")
        with torch.no_grad():
            h = lm.after_attention(w, i, h, target)  # the teacher's stream goes on to the next layer
    save_atomic({"lora": lora.state_dict(), "ranks": lora.ranks}, os.path.join(a.work, "stage1.pt"))
    return 0


def lora_from(w, path):
    st = torch.load(path)
    lora = lm.LoRA(w, st["ranks"])
    lora.load_state_dict(st["lora"])
    return lora


# ---------------------------------------------------------------- stage 2

def cmd_stage2(a):
    """End-to-end: KL(teacher ‖ student) on every position after the chat prefix, against the
    teacher's top-k log-probs cached while it sampled (a step costs only the student)."""
    w = load_model(a)
    ckpt = os.path.join(a.work, "stage2.pt")
    data = train_parts(a.work)
    P = len(CHAT_PREFIX)
    state = torch.load(ckpt) if os.path.exists(ckpt) else None
    lora = lm.LoRA(w, state["ranks"] if state else torch.load(os.path.join(a.work, "stage1.pt"))["ranks"])
    lora.load_state_dict(state["lora"] if state else torch.load(os.path.join(a.work, "stage1.pt"))["lora"])
    opt = torch.optim.AdamW(lora.parameters(), lr=a.lr2, weight_decay=0.0)
    step, elapsed, order = 0, 0.0, torch.randperm(data["ids"].shape[0], generator=torch.Generator().manual_seed(0))
    if state:
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        log(a.work, f"stage2: resumed at step {step} ({elapsed / 60:.1f} of {a.minutes2} min)")
    budget = a.minutes2 * 60
    t_run, t_saved, losses = time.time(), time.time(), []
    while elapsed + (time.time() - t_run) < budget:
        now = elapsed + time.time() - t_run
        # warm-up over the first 3 % of the time, then cosine to 10 % of the peak, by the clock
        frac = now / budget
        lr = a.lr2 * (frac / 0.03 if frac < 0.03 else 0.1 + 0.45 * (1 + math.cos(math.pi * (frac - 0.03) / 0.97)))
        for group in opt.param_groups:
            group["lr"] = lr
        j = order[(step * a.batch2 + torch.arange(a.batch2)) % len(order)]
        ids = data["ids"][j]
        hs = lm.hidden(w, ids, "student", lora)[:, P - 1:]                     # [b, T-P+1, D]
        top_ids = data["top_ids"][j].long().reshape(-1, data["top_ids"].shape[-1])
        top_logp = data["top_logp"][j].float().reshape(top_ids.shape)
        kl = lm.topk_kl((hs @ w.head.t()).reshape(top_ids.shape[0], -1), top_ids, top_logp).mean()
        opt.zero_grad(set_to_none=True)
        kl.backward()
        torch.nn.utils.clip_grad_norm_(lora.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(kl.item())
        if step % 10 == 0:
            dt = elapsed + time.time() - t_run
            log(a.work, f"stage2: step {step} KL {sum(losses) / len(losses):.4f} lr {lr:.1e} "
                        f"({dt / 60:.1f} min, {ids.numel() * step / dt:.0f} tok/s)")
            losses = []
        if time.time() - t_saved > a.checkpoint_minutes * 60:
            save_atomic({"lora": lora.state_dict(), "ranks": lora.ranks, "opt": opt.state_dict(), "step": step,
                         "elapsed": elapsed + time.time() - t_run}, ckpt)
            t_saved = time.time()
    save_atomic({"lora": lora.state_dict(), "ranks": lora.ranks, "opt": opt.state_dict(), "step": step,
                 "elapsed": max(budget, elapsed + time.time() - t_run)}, ckpt)
    log(a.work, f"stage2: done at step {step}")
    return 0


# ---------------------------------------------------------------- export, evaluate

def latest_lora(w, work):
    for name in ("stage2.pt", "stage1.pt"):
        if os.path.exists(os.path.join(work, name)):
            return lora_from(w, os.path.join(work, name)), name
    raise SystemExit(f"nothing trained in {work}")


def write_peft(lora, out_dir, base_model="HuggingFaceTB/SmolLM2-135M-Instruct"):
    """PEFT layout: adapter_config.json + adapter_model.safetensors (bf16), A [r, in], B [out, r],
    scale alpha / r = lora.alpha_per_rank; layers of another rank listed in rank_pattern and
    alpha_pattern. Returns the safetensors file's path."""
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    tensors, rank_pattern, alpha_pattern = {}, {}, {}
    base_rank = max(set(lora.ranks), key=lora.ranks.count)
    for i, rank in enumerate(lora.ranks):
        for t in lm.LORA_TARGETS:
            p = f"base_model.model.model.layers.{i}.self_attn.{t}"
            tensors[p + ".lora_A.weight"] = lora.A[f"{i}_{t}"].detach().to(torch.bfloat16).contiguous()
            tensors[p + ".lora_B.weight"] = lora.B[f"{i}_{t}"].detach().to(torch.bfloat16).contiguous()
            if rank != base_rank:
                rank_pattern[f"model.layers.{i}.self_attn.{t}"] = rank
                alpha_pattern[f"model.layers.{i}.self_attn.{t}"] = rank * lora.alpha_per_rank
    path = os.path.join(out_dir, "adapter_model.safetensors")
    save_file(tensors, path)
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": base_rank,
           "lora_alpha": base_rank * lora.alpha_per_rank, "rank_pattern": rank_pattern,
           "alpha_pattern": alpha_pattern, "lora_dropout": 0.0, "bias": "none", "use_rslora": False,
           "fan_in_fan_out": False, "target_modules": list(lm.LORA_TARGETS),
           "base_model_name_or_path": base_model}
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")
    return path


def cmd_export(a):
    w = load_model(a)
    lora, source = latest_lora(w, a.work)
    path = write_peft(lora, a.out)
    log(a.work, f"export: {source} -> {a.out} (ranks {sorted(set(lora.ranks))}, "
                f"{os.path.getsize(path) / 1e6:.2f} MB)")
    return 0


def perplexity_report(nll_t, nll_s, spans):
    out = {}
    for name, (lo, hi) in spans.items():
        out[name] = {"teacher": math.exp(nll_t[:, lo:hi].mean().item()),
                     "student": math.exp(nll_s[:, lo:hi].mean().item())}
        out[name]["ratio"] = out[name]["student"] / out[name]["teacher"]
    return out


def cmd_evaluate(a):
    """Perplexity of teacher and student on the held-out samples (every position after the chat
    prefix), at 512 and 2,048 tokens of context and per stretch of 256 positions; and on token
    ids given with --ids (e.g. a text tokenized by `liger tokenize`)."""
    w = load_model(a)
    lora, source = latest_lora(w, a.work) if not a.no_lora else (None, "no LoRA")
    P = len(CHAT_PREFIX)
    ids = heldout(a.work)["ids"]
    report = {"adapter": source}
    nll_t = torch.cat([lm.token_nll(w, ids[s:s + 1], "teacher") for s in range(len(ids))])[:, P - 1:]
    nll_s = torch.cat([lm.token_nll(w, ids[s:s + 1], "student", lora) for s in range(len(ids))])[:, P - 1:]
    n = nll_t.shape[1]
    spans = {"first 512 tokens": (0, 512 - P + 1), f"all {ids.shape[1]} tokens": (0, n)}
    for lo in range(0, ids.shape[1], 256):
        spans[f"positions {lo}-{lo + 255}"] = (max(lo - P + 1, 0), lo + 256 - P + 1)
    report["heldout"] = perplexity_report(nll_t, nll_s, spans)
    report["heldout_per_sequence"] = [perplexity_report(nll_t[k:k + 1], nll_s[k:k + 1], {"all": (0, n)})["all"]
                                      for k in range(len(ids))]
    for path in a.ids or []:
        t = torch.tensor([[int(x) for x in open(path).read().replace(",", " ").split()]])
        r = perplexity_report(lm.token_nll(w, t, "teacher"), lm.token_nll(w, t, "student", lora),
                              {"all": (0, t.shape[1] - 1)})
        report[os.path.basename(path)] = r["all"]
    for k, v in report.items():
        log(a.work, f"evaluate: {k}: {json.dumps(v)}")
    with open(os.path.join(a.work, "evaluation.json"), "w") as f:
        json.dump(report, f, indent=1)
    return 0


def cmd_answer(a):
    """Greedy answers of the teacher (plain SmolLM2) or the trained student to chat prompts
    given as token ids (one prompt per line, e.g. from `liger perplexity --save-ids`)."""
    from gguf_weights import detokenize, read_vocab
    w = load_model(a)
    vocab = read_vocab(a.gguf)
    lora = latest_lora(w, a.work)[0] if a.student else None
    for line in open(a.prompts):
        prompt = [int(x) for x in line.replace(",", " ").split()]
        if not prompt:
            continue
        if a.student:  # no cache for the student: a full forward per token (short answers)
            ids = prompt[:]
            with torch.no_grad():
                for _ in range(a.max_tokens):
                    ids.append(int(lm.logits(w, torch.tensor([ids]), "student", lora)[0, -1].argmax()))
                    if ids[-1] == a.stop:
                        break
        else:
            ids = lm.sample_teacher(w, prompt, 1, len(prompt) + a.max_tokens, seed=0, greedy=True)[0][0].tolist()
        answer = ids[len(prompt):]
        if a.stop in answer:
            answer = answer[: answer.index(a.stop)]
        print(json.dumps(detokenize(vocab, answer)), flush=True)
    return 0


def cmd_all(a):
    a.fixtures, a.tolerance = os.path.join(HERE, "..", "tests", "fixtures"), 1e-3
    for cmd in (cmd_selftest, cmd_sample, cmd_stage1, cmd_stage2, cmd_export, cmd_evaluate):
        if cmd(a):
            return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch-test-data.sh)")
    ap.add_argument("--work", default=os.path.join(HERE, "work"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    sub = ap.add_subparsers(dest="cmd", required=True)
    cmds = {}

    def add(name, fn):
        cmds[name] = fn
        return sub.add_parser(name)

    s = add("selftest", cmd_selftest)
    s.add_argument("--fixtures", default=os.path.join(HERE, "..", "tests", "fixtures"))
    s.add_argument("--tolerance", type=float, default=1e-3)
    for name, fn in (("sample", cmd_sample), ("stage1", cmd_stage1), ("stage2", cmd_stage2),
                     ("export", cmd_export), ("evaluate", cmd_evaluate), ("all", cmd_all)):
        p = add(name, fn)
        if name in ("sample", "all"):
            p.add_argument("--parts", type=int, default=3, help="parts of --batch teacher samples")
            p.add_argument("--sample-batch", type=int, default=64, help="sequences sampled together")
            p.add_argument("--seq", type=int, default=1024, help="tokens per training sequence")
            p.add_argument("--free-parts", type=int, default=0,
                           help="parts of free text (from <|endoftext|>) besides the chat samples")
            p.add_argument("--heldout-seqs", type=int, default=4)
            p.add_argument("--heldout-len", type=int, default=2048)
            p.add_argument("--sample-minutes", type=float, default=30)
        if name in ("stage1", "all"):
            p.add_argument("--seqs", type=int, default=32, help="training sequences for stage 1")
            p.add_argument("--steps", type=int, default=120, help="steps per layer (at most)")
            p.add_argument("--stage1-minutes", type=float, default=30, help="time box: fewer steps per layer beyond it")
            p.add_argument("--rank", type=int, default=8)
            p.add_argument("--hard-threshold", type=float, default=0.35)
            p.add_argument("--hard-rank", type=int, default=16)
            p.add_argument("--stage1-lr", dest="lr1", type=float, default=2e-3)
            p.add_argument("--stage1-batch", dest="batch1", type=int, default=2)
            p.add_argument("--heldout-stage1", dest="heldout_seqs1", type=int, default=2,
                           help="held-out sequences for the per-layer error")
        if name in ("stage2", "all"):
            p.add_argument("--stage2-minutes", dest="minutes2", type=float, default=60)
            p.add_argument("--stage2-lr", dest="lr2", type=float, default=5e-4)
            p.add_argument("--stage2-batch", dest="batch2", type=int, default=1)
            p.add_argument("--checkpoint-minutes", type=float, default=3)
        if name in ("export", "all"):
            p.add_argument("--out", default=os.path.join(HERE, "adapter"))
        if name in ("evaluate", "all"):
            p.add_argument("--ids", nargs="*", help="files of token ids to score as well")
            p.add_argument("--no-lora", action="store_true", help="the unrecovered student")
    p = add("answer", cmd_answer)
    p.add_argument("prompts", help="a file of chat prompts as token ids, one per line")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--stop", type=int, default=2, help="the end-of-turn id (<|im_end|>)")
    p.add_argument("--student", action="store_true", help="the trained student instead of the teacher")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.cmd != "selftest" and not a.gguf:
        ap.error("--gguf is required")
    os.makedirs(a.work, exist_ok=True)
    return cmds[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
