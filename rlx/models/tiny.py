"""The embedded model: byte-level BPE trained on the task text + a ~1M-parameter Qwen3, warm-started
by rlx's own SFT, built on first use and cached under ``$RLX_CACHE`` (default ``~/.cache/rlx``). This module
holds the tokenizer, the architecture and the cache; the build that trains it is ``rlx/trainers/embedded.py``.

It is saved and loaded through the same ``from_pretrained`` path a hub model uses. Qwen3 and not
Qwen2: with ``model_type: qwen2`` AutoTokenizer silently swaps in Qwen2's pre-tokenizer
(docs/environment.md §2). Digits are pre-tokenized one by one; merged digits make SFT learn a lookup
table instead of addition (docs/calibration.md §2.3).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

from omegaconf import OmegaConf

SPECIALS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
RECIPE_VERSION = 1  # bump when the build code changes what a given config produces


def cache_root() -> Path:
    return Path(os.environ.get("RLX_CACHE", Path.home() / ".cache" / "rlx"))


def recipe_hash(cfg, task: dict | None = None) -> str:
    """The cache key of an embedded build: the model recipe, and for a multi-turn env its warm-start task
    (``trainers.embedded.warm_task``); None leaves the single-turn key as it always was."""
    keys = OmegaConf.to_container(cfg, resolve=True)
    keys = {k: keys[k] for k in ("arch", "vocab_size", "warm_start", "init")}
    if task is not None:
        keys["task"] = task
    import torch
    import transformers

    blob = json.dumps([RECIPE_VERSION, keys, torch.__version__, transformers.__version__], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|endoftext|>",
                                 bos_token=None, unk_token=None, padding_side="left")
    hf.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return hf


def build_model(cfg, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen3Config

    a = cfg.arch
    conf = Qwen3Config(vocab_size=len(tokenizer), hidden_size=a.hidden_size, intermediate_size=a.intermediate_size,
                       num_hidden_layers=a.num_hidden_layers, num_attention_heads=a.num_attention_heads,
                       num_key_value_heads=a.num_key_value_heads, head_dim=a.head_dim,
                       max_position_embeddings=a.max_position_embeddings, tie_word_embeddings=True,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                       bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(cfg.warm_start.seed)
    model = AutoModelForCausalLM.from_config(conf)
    model.generation_config = GenerationConfig(pad_token_id=tokenizer.pad_token_id,
                                               eos_token_id=tokenizer.eos_token_id)
    return model


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # parallel sweep jobs build the model once
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
