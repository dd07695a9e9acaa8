"""Benchmark llmvis against its peers on the same work, the same weights and the same threads.

Workloads (T = tokens of the text; the texts are bench_browser.text_of_tokens, ids from llmvis's
own tokenisation, handed unchanged to every tool):
  W1  generate 128 tokens, greedy, with per-token statistics: llmvis's decode loop (every layer's
      states, prob, rank, entropy, top-100) against plain `model.generate`
  W2  every head of every layer's attention (30 layers x 9 heads) of a T-token text, from the text:
      llmvis (`llmvis.score` + `Trace.attention_all()`), HF (`output_attentions=True`, eager),
      TransformerLens (`TransformerBridge.run_with_cache` of every hook_pattern), bertviz
      (HF's attentions + `model_view` HTML)
  W3  logit lens of every state (31) at every position of a 1,024-token text (top-20, the next
      token's prob and rank, entropy): llmvis (`llmvis.score` + `Trace.logit_lens`), HF (hidden
      states + final norm + LM head), nnsight (a trace that saves the same statistics),
      TransformerLens (cached residuals + ln_final + unembed)
  W4  scoring a 2,048-token text (every layer's states; prob, rank, entropy, top-100 at every
      position): `llmvis.score` against an HF forward computing the same statistics

Every tool gets the model llmvis loads (llmvis.model.loading: the default SmolLM2-135M, converted
from its GGUF, float32); peers wrap that HF model object. Each measurement runs in its own
subprocess with OMP_NUM_THREADS / torch threads set to --threads for every tool, under a memory
watchdog (RSS polled; a process above --mem-limit-gb is killed and reported as "oom"); the tools
take turns, repeat after repeat, and the JSON gives medians, the peak RSS of the work and the
ratios llmvis / peer. A peer that is not installed is reported as skipped. The peers are optional
bench dependencies (bench/requirements-peers.txt); --python runs the subprocesses with another
interpreter (a venv that has them), with this checkout on PYTHONPATH.

    OMP_NUM_THREADS=1 python bench/bench_peers.py [--workloads W1 W2 W3 W4] [--w2-lengths 512 1024 2048]
        [--tools llmvis hf transformer_lens nnsight bertviz] [--repeats 3] [--threads 1]
        [--mem-limit-gb 12] [--python /tmp/peers-venv/bin/python] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOOLS = ("llmvis", "hf", "transformer_lens", "nnsight", "bertviz")
MODULES = {"transformer_lens": "transformer_lens", "nnsight": "nnsight", "bertviz": "bertviz"}
WORK_TOOLS = {  # which tools do which workload
    "W1": ("llmvis", "hf"),
    "W2": ("llmvis", "hf", "transformer_lens", "bertviz"),
    "W3": ("llmvis", "hf", "nnsight", "transformer_lens"),
    "W4": ("llmvis", "hf"),
}
NOT_MEASURED = {  # peers that have no such workload of their own, and why
    "W1": {"transformer_lens": "not measured: the issue compares generation with HF generate",
           "nnsight": "not measured: the issue compares generation with HF generate",
           "bertviz": "no generation"},
    "W2": {"nnsight": "not measured: nnsight has no attention-pattern API of its own (it would be HF's eager attentions)"},
    "W3": {"bertviz": "no logit lens"},
    "W4": {"transformer_lens": "not measured: the issue compares scoring with an HF forward",
           "nnsight": "not measured: the issue compares scoring with an HF forward", "bertviz": "no scoring"},
}
LENS_K = 20        # the lens keeps the top 20 per (state, position), as llmvis does
SCORE_K = 100      # scoring keeps the top 100 per position
ROW_CHUNK = 256    # full-vocabulary rows at a time in the peers' lens and scoring code
CHECK_LAYER, CHECK_HEAD = 7, 2  # whose attention row is compared across tools
INSTALL_NOTES = {
    "bertviz": "1.4.1 installs with --no-deps: its boto3 requirement (unused by head_view/model_view) "
               "does not resolve against constraints.txt (pip backtracks through every botocore release)",
}


# ---------------------------------------------------------------- the measured work (child side)
def rss_bytes(pid: int | str = "self", field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak() -> None:
    """Make VmHWM start again from the current RSS (Linux: 5 > /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def hf_stats(logits, next_ids, k):
    """Top-k, the next token's prob and rank, and entropy of rows of logits (c, V): written here,
    for the peers, independently of llmvis's code."""
    import torch

    logp = torch.log_softmax(logits.float(), -1)
    ent = -(logp.exp() * logp).nan_to_num(0.0).sum(-1)
    top_l, top_i = torch.topk(logp, k, dim=-1)
    chosen = logp.gather(1, next_ids.clamp(min=0)[:, None])
    rank = (logp > chosen).sum(-1) + 1
    return top_i, top_l.exp(), chosen[:, 0].exp(), rank, ent


_WRAPPED: dict = {}  # one peer wrapper per process: the warm-up and the timed runs share it


def tl_bridge(lm):
    """A TransformerBridge around llmvis's HF model (the same weights; it swaps in its own modules)."""
    if "tl" not in _WRAPPED:
        from transformer_lens.model_bridge.sources import build_bridge_from_module

        _WRAPPED["tl"] = build_bridge_from_module(lm.model, type(lm.model).__name__, hf_config=lm.model.config,
                                                  tokenizer=lm.tokenizer)
    return _WRAPPED["tl"]


def nnsight_model(lm):
    if "nnsight" not in _WRAPPED:
        import nnsight

        _WRAPPED["nnsight"] = nnsight.LanguageModel(lm.model, tokenizer=lm.tokenizer)
    return _WRAPPED["nnsight"]


def work_w1(tool, lm, ids, n):
    import torch

    from llmvis.engine.decode import GenerationParams, decode

    if tool == "llmvis":
        def run():
            res = decode(lm.model, ids, GenerationParams(0.0, 50, 0.95, n, seed=1), stop_ids=set())
            return res.ids[len(ids):]
    else:
        inp = torch.tensor([ids])

        def run():
            with torch.inference_mode():
                out = lm.model.generate(inp, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                                        pad_token_id=lm.tokenizer.eos_token_id)
            return out[0, len(ids):].tolist()
    return run, lambda got: got[:16]


def work_w2(tool, lm, ids, text):
    import torch

    model = lm.model
    inp = torch.tensor([ids])
    if tool == "llmvis":
        import llmvis

        def run():
            trace = llmvis.score(text)
            check = None
            for layer, heads in trace.attention_all():  # (H, T, T), one layer at a time
                if layer == CHECK_LAYER:
                    check = heads[CHECK_HEAD, -1, :16].tolist()
            trace.engine.store.remove(trace.run.id)
            return check
    elif tool in ("hf", "bertviz"):
        model.set_attn_implementation("eager")
        tokens = lm.tokenizer.convert_ids_to_tokens(ids)

        def run():
            with torch.inference_mode():
                out = model(inp, output_attentions=True)
            if tool == "bertviz":
                from bertviz import model_view

                html = model_view(out.attentions, tokens, html_action="return")
                del html
            return out.attentions[CHECK_LAYER][0, CHECK_HEAD, -1, :16].tolist()
    elif tool == "transformer_lens":
        bridge = tl_bridge(lm)

        def run():
            with torch.inference_mode():
                _, cache = bridge.run_with_cache(inp, names_filter=lambda name: name.endswith("hook_pattern"))
            pattern = cache.cache_dict[f"blocks.{CHECK_LAYER}.attn.hook_pattern"]  # (1, H, T, T)
            return pattern[0, CHECK_HEAD, -1, :16].tolist()
    else:
        raise ValueError(tool)
    return run, lambda got: got


def lens_from_states(states, norm, head, next_ids, last_normed=False):
    """states: L+1 tensors (T, H); the final norm is applied to each (but the last when
    last_normed) -> (top_i, top_p, prob, rank, entropy) per state."""
    import torch

    out = []
    for i, h in enumerate(states):
        parts = []
        for a in range(0, h.shape[0], ROW_CHUNK):
            rows = h[a:a + ROW_CHUNK]
            logits = head(rows if last_normed and i == len(states) - 1 else norm(rows))
            parts.append(hf_stats(logits, next_ids[a:a + ROW_CHUNK], LENS_K))
        out.append(tuple(torch.cat(p) for p in zip(*parts)))
    return out


def lens_check(stats):
    """The final state's top token at 8 positions and the middle state's next-token probs."""
    mid = len(stats) // 2
    return [int(x) for x in stats[-1][0][:8, 0]] + [round(float(x), 5) for x in stats[mid][2][:8]]


def work_w3(tool, lm, ids, text):
    import torch

    model = lm.model
    base = model.get_decoder()
    inp = torch.tensor([ids])
    next_ids = torch.tensor(ids[1:] + [0])
    if tool == "llmvis":
        import llmvis

        def run():
            trace = llmvis.score(text)
            lens = trace.logit_lens(0, len(ids), top_k=LENS_K)
            trace.engine.store.remove(trace.run.id)
            return lens
        return run, llmvis_lens_check
    if tool == "hf":
        def run():
            with torch.inference_mode():
                out = base(inp, output_hidden_states=True)  # the last state is already normed
                states = [h[0] for h in out.hidden_states]
                return lens_check(lens_from_states(states, base.norm, model.lm_head, next_ids, last_normed=True))
        return run, lambda got: got
    if tool == "nnsight":
        nm = nnsight_model(lm)

        def run():
            saved = []
            with torch.inference_mode(), nm.trace(inp):
                states = [nm.model.embed_tokens.output] + [layer.output for layer in nm.model.layers]
                for h in states:
                    h = h[0] if isinstance(h, tuple) else h
                    rows = []
                    for a in range(0, len(ids), ROW_CHUNK):
                        logits = nm.lm_head(nm.model.norm(h[0, a:a + ROW_CHUNK]))
                        logp = logits.log_softmax(-1)
                        top_l, top_i = logp.topk(LENS_K, dim=-1)
                        nxt = next_ids[a:a + ROW_CHUNK]
                        chosen = logp.gather(1, nxt[:, None])
                        rank = (logp > chosen).sum(-1) + 1
                        ent = -(logp.exp() * logp).nan_to_num(0.0).sum(-1)
                        rows.append((top_i.save(), top_l.exp().save(), chosen[:, 0].exp().save(), rank.save(), ent.save()))
                    saved.append(rows)
            stats = [tuple(torch.cat([r[j] for r in rows]) for j in range(5)) for rows in saved]
            return lens_check(stats)
        return run, lambda got: got
    if tool == "transformer_lens":
        bridge = tl_bridge(lm)
        names = ["embed.hook_out"] + [f"blocks.{i}.hook_out" for i in range(model.config.num_hidden_layers)]

        def run():
            with torch.inference_mode():
                _, cache = bridge.run_with_cache(inp, names_filter=lambda name: name in names)
                states = [cache[name][0] for name in names]
                return lens_check(lens_from_states(states, bridge.ln_final, bridge.unembed, next_ids))
        return run, lambda got: got
    raise ValueError(tool)


def llmvis_lens_check(lens):
    """lens_check's numbers from llmvis's logit-lens answer."""
    mid = len(lens["top_ids"]) // 2
    return [int(row[0]) for row in lens["top_ids"][-1][:8]] + [round(float(x), 5) for x in lens["chosen_prob"][mid][:8]]


def work_w4(tool, lm, ids, text):
    import torch

    if tool == "llmvis":
        import llmvis

        def run():
            trace = llmvis.score(text)
            stats = trace.run.result.stats
            check = [round(float(x), 5) for x in stats.prob[1:9]] + [int(x) for x in stats.rank[1:9]]
            trace.engine.store.remove(trace.run.id)
            return check
    else:
        inp = torch.tensor([ids])
        nxt = torch.tensor(ids[1:])

        def run():
            with torch.inference_mode():
                out = lm.model(inp, output_hidden_states=True)
                states = torch.stack(out.hidden_states)  # (L+1, 1, T, H), kept as llmvis keeps them
                logits = out.logits[0, :-1]  # (T-1, V): each row predicts the next token
                parts = [hf_stats(logits[a:a + ROW_CHUNK], nxt[a:a + ROW_CHUNK], SCORE_K)
                         for a in range(0, len(nxt), ROW_CHUNK)]
                _, _, prob, rank, _ = (torch.cat(p) for p in zip(*parts))
                del states
            return [round(float(x), 5) for x in prob[:8]] + [int(x) for x in rank[:8]]
    return run, lambda got: got


def child(args) -> dict:
    """One measurement: load the model, build the work, warm up on a short text, time --repeats-in runs."""
    import torch

    torch.set_num_threads(args.threads)
    mod = MODULES.get(args.tool)
    version = None
    if mod:
        try:
            version = __import__(mod).__dict__.get("__version__")
        except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
            return {"status": "skipped", "reason": f"not installed: {type(exc).__name__}: {str(exc)[:160]}"}
        if version is None:
            from importlib.metadata import version as dist_version

            version = dist_version(mod.replace("_", "-"))
    from bench_browser import text_of_tokens

    from llmvis.core.config import ModelConfig, ServerConfig
    from llmvis.engine.engine import Engine
    from llmvis.model.loading import load_model
    from llmvis.pyapi import engine_for

    if args.tool == "llmvis":
        eng = engine_for("default")  # the engine llmvis.score uses: loaded once here
        lm = eng.lm
    else:
        lm = load_model(ModelConfig())
        eng = Engine(lm, ServerConfig())

    def ids_of(text):
        ids = eng.prepare_score(text).prompt.ids
        eng.jobs = type(eng.jobs)(eng.config.max_queue)  # the probe job was never run
        return ids

    if args.workload == "W1":
        prompt = "Write a long, detailed story about a dragon who learns to paint."
        ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)["input_ids"]
        run, check = work_w1(args.tool, lm, ids, args.size)
        warm, _ = work_w1(args.tool, lm, ids, 8)
    else:
        text = text_of_tokens(args.size)
        ids = ids_of(text)
        build = {"W2": work_w2, "W3": work_w3, "W4": work_w4}[args.workload]
        run, check = build(args.tool, lm, ids, text)
        short = text_of_tokens(48)
        warm, _ = build(args.tool, lm, ids_of(short), short)
    warm()
    times, cpu, peaks = [], [], []
    got = None
    for _ in range(args.repeats_in):
        base_rss = rss_bytes()
        reset_peak()
        w, c = time.perf_counter(), time.process_time()
        got = run()
        times.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
        peaks.append(max(0, rss_bytes(field="VmHWM") - base_rss))
    return {"status": "ok", "tokens": args.size if args.workload == "W1" else len(ids), "prompt_tokens": len(ids), "wall_s": times, "cpu_s": cpu, "work_peak_rss_growth": peaks,
            "model_rss": base_rss, "version": version, "torch_threads": torch.get_num_threads(),
            "check": check(got)}


# ---------------------------------------------------------------- orchestration (parent side)
def measure(python, tool, workload, size, args) -> dict:
    """Run one measurement in a subprocess under the memory watchdog."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [python, str(Path(__file__).resolve()), "--child", "--tool", tool, "--workload", workload,
           "--size", str(size), "--threads", str(args.threads), "--repeats-in", str(args.repeats_in)]
    limit = args.mem_limit_gb * 2**30
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    peak, started, verdict = 0, time.monotonic(), None
    while proc.poll() is None:
        rss = rss_bytes(proc.pid)
        peak = max(peak, rss)
        if rss > limit:
            verdict = "oom"
        elif time.monotonic() - started > args.timeout_s:
            verdict = "timeout"
        if verdict:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    out, err = proc.communicate()
    if verdict:
        return {"status": verdict, "rss_at_kill": peak, "limit_gb": args.mem_limit_gb, "after_s": round(time.monotonic() - started, 1)}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"status": "error", "returncode": proc.returncode, "stderr_tail": err[-600:]}
    res = json.loads(lines[-1])
    res["process_peak_rss"] = peak
    return res


def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if r.get("status") == "ok"]
    if not ok:
        return runs[0] if runs else {"status": "not run"}
    wall = [t for r in ok for t in r["wall_s"]]
    cpu = [t for r in ok for t in r["cpu_s"]]
    grow = [g for r in ok for g in r["work_peak_rss_growth"]]
    return {"status": "ok" if len(ok) == len(runs) else f"{len(ok)} of {len(runs)} ok",
            "tokens": ok[0]["tokens"], "measurements": len(wall),
            "wall_s_median": round(statistics.median(wall), 3), "wall_s": [round(t, 3) for t in wall],
            "cpu_s_median": round(statistics.median(cpu), 3),
            "work_peak_rss_growth_gb_median": round(statistics.median(grow) / 2**30, 3),
            "process_peak_rss_gb_max": round(max(r["process_peak_rss"] for r in ok) / 2**30, 3),
            "version": ok[0].get("version"), "torch_threads": ok[0].get("torch_threads"), "check": ok[0]["check"]}


def max_abs_diff(a, b) -> float | None:
    try:
        return max(abs(float(x) - float(y)) for x, y in zip(a, b, strict=True))
    except (TypeError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["W1", "W2", "W3", "W4"], choices=sorted(WORK_TOOLS))
    ap.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    ap.add_argument("--w1-tokens", type=int, default=128)
    ap.add_argument("--w2-lengths", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--w3-tokens", type=int, default=1024)
    ap.add_argument("--w4-tokens", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3, help="measurements per (tool, workload, size), each in its own process")
    ap.add_argument("--repeats-in", type=int, default=1, help="timed runs inside each process (after a short warm-up)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--mem-limit-gb", type=float, default=12.0)
    ap.add_argument("--timeout-s", type=float, default=900.0)
    ap.add_argument("--python", default=sys.executable, help="interpreter for every measurement (one with the peers)")
    ap.add_argument("--quick", action="store_true", help="W4 at 64 tokens, llmvis and HF, one measurement (a smoke test)")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tool", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.workloads, args.tools, args.repeats, args.w4_tokens = ["W4"], ["llmvis", "hf"], 1, 64
    sizes = {"W1": [args.w1_tokens], "W2": args.w2_lengths, "W3": [args.w3_tokens], "W4": [args.w4_tokens]}
    report = {"benchmark": "peers", "date": time.strftime("%Y-%m-%d %H:%M"), "cpu_count": os.cpu_count(),
              "threads": args.threads, "python": args.python, "repeats": args.repeats, "repeats_in": args.repeats_in,
              "mem_limit_gb": args.mem_limit_gb, "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
              "install_notes": INSTALL_NOTES, "workloads": {}}
    for w in args.workloads:
        for size in sizes[w]:
            tools = [t for t in WORK_TOOLS[w] if t in args.tools]
            runs: dict[str, list] = {t: [] for t in tools}
            for rep in range(args.repeats):
                order = tools[rep % len(tools):] + tools[:rep % len(tools)]  # take turns
                for tool in order:
                    if runs[tool] and runs[tool][-1].get("status") in ("skipped", "oom", "timeout"):
                        continue  # a peer that is missing or ran out of memory once is not run again
                    res = measure(args.python, tool, w, size, args)
                    runs[tool].append(res)
                    print(f"{w} T={size} {tool}: {res.get('status')} {res.get('wall_s', '')}", file=sys.stderr, flush=True)
                    if args.out:  # every measurement so far, in case the run is stopped
                        Path(args.out + ".partial").write_text(json.dumps({f"{w}_T{size}": runs}) + "\n")
            entry = {t: summarise(r) for t, r in runs.items()}
            for tool, why in NOT_MEASURED.get(w, {}).items():
                if tool in args.tools:
                    entry[tool] = {"status": why}
            ours = entry.get("llmvis", {})
            ratios = {}
            for tool, res in entry.items():
                if tool == "llmvis" or res.get("status") != "ok" or ours.get("status") != "ok":
                    continue
                ratios[tool] = {"time": round(ours["wall_s_median"] / res["wall_s_median"], 3),
                                "cpu_time": round(ours["cpu_s_median"] / res["cpu_s_median"], 3),
                                "work_rss": (round(ours["work_peak_rss_growth_gb_median"] / res["work_peak_rss_growth_gb_median"], 3)
                                             if res["work_peak_rss_growth_gb_median"] > 0 else None)}
                diff = max_abs_diff(ours.get("check"), res.get("check"))
                if diff is not None and not math.isnan(diff):
                    ratios[tool]["check_max_abs_diff"] = diff
            entry["ratios_llmvis_over_peer"] = ratios
            report["workloads"][f"{w}_T{size}"] = entry
            if args.out:  # what is done so far survives a stopped run
                Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
