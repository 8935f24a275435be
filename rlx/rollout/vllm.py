"""Generation with vLLM (``hardware=vllm``, optional GPU extra: ``pip install vllm``).

Same interface as the HF engine (``generate(prompts, n, greedy) -> Rollout``). Sampling parameters
map one to one (temperature, top_p, top_k with 0 = off, max_new_tokens; greedy = temperature 0).
After every update the trainer calls ``sync_weights(model)``, which loads the policy's current
weights into the engine in process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` keeps vLLM's model in this
process so the weights can be handed over without a copy through disk).

The engine's own log-probs of the sampled tokens are kept in ``Rollout.engine_logp`` (vLLM returns them
with the sample, so ``rollout.engine_logprobs: null`` turns them on here; ``false`` turns them off).
They must be in the trainer's convention, log softmax of the *raw* logits (``rollout.base.Rollout``):
that is vLLM V1's default ``logprobs_mode="raw_logprobs"`` (before temperature, penalties, top-k/top-p);
``processed_logprobs`` would be the tempered, truncated sampling distribution, which the trainer does
not compute. The online loop logs their mismatch with the trainer's old log-probs (``rollout/logp_diff``,
``rollout/logp_diff_max``) and, with ``rollout.is_correction=tis``, reweights the policy-gradient terms
by the truncated importance weight min(π_trainer/π_engine, ``rollout.is_cap``) (``rollout/correction.py``).

Not exercised on this project's CPU machines (vLLM needs a GPU); ``benchmarks/gpu_check.sh`` runs it
where one is at hand.
"""

from __future__ import annotations

import os

import torch

from rlx.ops import response_mask_from_eos
from rlx.registry import ENGINES
from rlx.rollout.base import Rollout, RolloutEngine, records_logprobs


class VLLMEngine(RolloutEngine):
    def __init__(self, model, tokenizer, cfg, device="cuda", autocast=False):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("rollout.engine=vllm needs vLLM (pip install vllm, on a CUDA machine); "
                              "use rollout.engine=hf on CPUs") from e
        self.tok, self.cfg, self.device = tokenizer, cfg, torch.device(device)
        self.record_logp = records_logprobs(cfg, free=True)
        path = getattr(model, "name_or_path", None) or model.config._name_or_path
        self.llm = LLM(model=path, tokenizer=path, dtype=str(model.dtype).removeprefix("torch."),
                       gpu_memory_utilization=float(cfg.get("gpu_memory_utilization", 0.3)),
                       seed=int(cfg.get("seed", 0)), enable_prefix_caching=True)
        self.sync_weights(model)

    def _params(self, n: int, greedy: bool, seed: int | None = None):
        from vllm import SamplingParams

        c = self.cfg
        return SamplingParams(n=n, max_tokens=c.max_new_tokens, logprobs=0 if self.record_logp else None,
                              temperature=0.0 if greedy else c.temperature, seed=seed,
                              top_p=1.0 if greedy else c.top_p, top_k=-1 if (greedy or not c.top_k) else c.top_k)

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int = 1, greedy: bool = False, keys: list[int] | None = None) -> Rollout:
        """``keys``: one vLLM request seed per prompt (its per-request generator: the prompt's own stream, though
        not the same numbers as rlx's decoding loop draws)."""
        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        ids, am = enc["input_ids"], enc["attention_mask"]
        reqs = [{"prompt_token_ids": row[m.bool()].tolist()} for row, m in zip(ids, am)]
        params = (self._params(n, greedy) if keys is None or greedy
                  else [self._params(n, greedy, seed=k % 2**31) for k in keys])
        outs = self.llm.generate(reqs, params, use_tqdm=False)
        T, pad, eos = self.cfg.max_new_tokens, self.tok.pad_token_id, self.tok.eos_token_id
        comp = torch.full((len(prompts) * n, T), pad, dtype=torch.long)
        logp = torch.zeros(len(prompts) * n, T)
        for i, out in enumerate(outs):
            for j, o in enumerate(out.outputs):
                k = i * n + j
                comp[k, :len(o.token_ids)] = torch.tensor(o.token_ids)
                for t, (tok_id, lp) in enumerate(zip(o.token_ids, o.logprobs or [])):
                    logp[k, t] = lp[tok_id].logprob
        mask = response_mask_from_eos(comp, eos)
        comp = comp.masked_fill(~mask, pad)
        texts = self.tok.batch_decode(comp.masked_fill(comp == eos, pad), skip_special_tokens=True)
        rep = lambda x: x.repeat_interleave(n, 0).to(self.device)  # noqa: E731
        logp = logp.masked_fill(~mask, 0.0).to(self.device) if self.record_logp else None
        return Rollout(rep(ids), rep(am), comp.to(self.device), mask.to(self.device),
                       ~(comp == eos).any(-1).to(self.device), texts, gen_tokens=int(mask.sum()), engine_logp=logp)

    def sync_weights(self, model) -> None:
        state = model.state_dict()
        runner = self.llm.llm_engine.model_executor.driver_worker.worker.model_runner
        runner.model.load_weights(((k.removeprefix("base_model.model."), v) for k, v in state.items()))


@ENGINES.register("vllm")
def build_vllm(cfg, model, tokenizer, device="cuda", autocast=False) -> VLLMEngine:
    return VLLMEngine(model, tokenizer, cfg, device=device)
