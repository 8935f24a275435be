"""Generation for transformers models: KV cache, left padding, explicit sampling parameters.

rlx's own loop (``rollout.sampler``: each prompt prefilled once for its n samples, preallocated
cache, finished rows dropped) runs when the model's cache allows it; ``model.generate`` otherwise
(``rollout.fast_sampler=false`` forces it). transformers fills unset generation fields with defaults
such as ``top_k=50`` and ``max_length=20`` (docs/calibration.md §4.4), which would make sampling silently
off-policy; every field is set here, and the sampler applies the same warpers in the same order.

``rollout.engine_logprobs`` (or ``rollout.is_correction`` with it left at null) makes the engine keep
``Rollout.engine_logp``, the log-probs of the sampled tokens in the trainer's convention (log softmax
of the raw logits: ``rollout.base.Rollout``); off by default, as this engine does not get them for free.
"""

from __future__ import annotations

import torch

from rlx.models import lean as lean_forward
from rlx.ops import response_mask_from_eos
from rlx.registry import ENGINES
from rlx.rollout.base import Rollout, RolloutEngine, records_logprobs
from rlx.rollout.sampler import Sampler
from rlx.runtime.speed import set_training


class HFEngine(RolloutEngine):
    def __init__(self, model, tokenizer, cfg, device="cpu", autocast=False):
        from transformers import GenerationConfig

        self.model, self.tok, self.device, self.autocast = model, tokenizer, torch.device(device), autocast
        self.max_new_tokens = cfg.max_new_tokens
        common = dict(max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id, use_cache=True)
        self.sample_cfg = GenerationConfig(do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k,
                                           top_p=cfg.top_p, **common)
        self.greedy_cfg = GenerationConfig(do_sample=False, **common)
        self.sampler = Sampler(model, cfg.max_new_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id,
                               temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
        self.fast = bool(cfg.get("fast_sampler", True)) and self.sampler.supported
        self.record_logp = records_logprobs(cfg, free=False)
        self.alive_sum = None   # sharded rollouts under FSDP: rows still decoding on all ranks (Sampler.__call__)

    def encode(self, prompts: list[str]):
        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def generate(self, prompts: list[str], n: int = 1, greedy: bool = False, keys: list[int] | None = None) -> Rollout:
        return self.generate_ids(*self.encode(prompts), n=n, greedy=greedy, keys=keys)

    @torch.no_grad()
    def generate_ids(self, ids: torch.Tensor, am: torch.Tensor, n: int = 1, greedy: bool = False,
                     keys: list[int] | None = None) -> Rollout:
        """``keys``: the prompts' random streams (rlx/rollout/streams.py), used by rlx's decoding loop; the
        ``model.generate`` fallback samples from torch's global generator."""
        was_training = self.model.training
        flags_only = self.fast and lean_forward.for_model(self.model) is not None   # no module forward runs
        set_training(self.model, False, flags_only)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            fast = (self.sampler(ids, am, n, greedy, with_logp=self.record_logp, keys=keys, alive_sum=self.alive_sum)
                    if self.fast else None)
            if n > 1:
                ids, am = ids.repeat_interleave(n, 0), am.repeat_interleave(n, 0)
            if fast is None:
                self.fast = False   # the model's cache is not one the sampler handles: generate() from now on
                comp, logp = self._generate(ids, am, greedy)
            else:
                comp, logp = fast
        set_training(self.model, was_training, flags_only)
        eos = self.tok.eos_token_id
        mask = response_mask_from_eos(comp, eos)
        has_eos = (comp == eos).any(-1)
        comp = comp.masked_fill(~mask, self.tok.pad_token_id)
        texts = self.tok.batch_decode(comp.masked_fill(comp == eos, self.tok.pad_token_id), skip_special_tokens=True)
        if logp is not None:
            logp = logp.masked_fill(~mask, 0.0)
        return Rollout(ids, am, comp, mask, ~has_eos, texts, gen_tokens=int(mask.sum()), engine_logp=logp)

    def _generate(self, ids, am, greedy: bool):
        """(completion ids, their log-probs or None) from ``model.generate``; the log-probs come from its raw
        (unwarped) logits, ``output_logits``, so they follow the same convention as the sampler's."""
        cfg = self.greedy_cfg if greedy else self.sample_cfg
        if not self.record_logp:
            return self.model.generate(input_ids=ids, attention_mask=am, generation_config=cfg)[:, ids.shape[1]:], None
        out = self.model.generate(input_ids=ids, attention_mask=am, generation_config=cfg, output_logits=True,
                                  return_dict_in_generate=True)
        comp = out.sequences[:, ids.shape[1]:]
        logits = torch.stack(out.logits, 1).float()                  # [N, T', V] before any warper
        return comp, torch.log_softmax(logits, -1).gather(-1, comp[..., None]).squeeze(-1)


@ENGINES.register("hf")
def build_hf(cfg, model, tokenizer, device="cpu", autocast=False) -> HFEngine:
    return HFEngine(model, tokenizer, cfg, device=device, autocast=autocast)
