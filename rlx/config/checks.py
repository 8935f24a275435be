"""Shape checks of a composed config: types against the group's own defaults (interpolations resolved,
mappings and list items included), null where a value is needed, non-finite floats, integers that no
tensor or RNG can hold, and the cross-key shapes (``reward.score_term`` names a term, attention heads
divide the hidden size). Each raises ``ConfigError`` naming the key; nothing here imports torch."""

from __future__ import annotations

import math
import re

from omegaconf import DictConfig, ListConfig

from rlx.config.values import ConfigError, _need
from rlx.registry import closest

# Keys whose default is a number or list but for which null is meaningful (each documented in conf/).
NULLABLE = {"trainer.mini_batch_size", "trainer.micro_batch_size", "hardware.num_threads", "algo.clip_ratio_c",
            "algo.cliprange_value", "model.arch.head_dim"}
INT64 = 2**63 - 1


def _type_name(v) -> str:
    if isinstance(v, (dict, DictConfig)):
        return "mapping"
    return "list" if isinstance(v, (list, ListConfig)) else type(v).__name__


def _same_type(val, ref) -> bool:
    if isinstance(ref, (list, ListConfig)):
        return isinstance(val, (list, ListConfig))
    return type(val) is type(ref) or (isinstance(ref, float) and isinstance(val, int) and not isinstance(val, bool))


def _is_interp(v) -> bool:
    return isinstance(v, str) and "${" in v


def check_types(node, base, prefix="") -> None:
    """``node``'s values against ``base`` (the defaults of the same group choices)."""
    if not isinstance(node, DictConfig) or not isinstance(base, DictConfig):
        return
    for key in node.keys():
        path = f"{prefix}{key}"
        if key not in base or path.startswith("hydra"):
            continue
        child, ref_child = node._get_node(key), base._get_node(key)
        if isinstance(child, DictConfig) and isinstance(ref_child, DictConfig):
            check_types(child, ref_child, path + ".")
            continue
        ref = ref_child if isinstance(ref_child, (ListConfig, DictConfig)) else ref_child._value()
        if isinstance(ref, DictConfig) or _is_interp(ref):
            continue
        val = child if isinstance(child, (ListConfig, DictConfig)) else child._value()
        if _is_interp(val):
            val = node[key]  # resolves (check_resolves ran first): ${oc.env:HOME} is a string, not an int
        if val is None or (isinstance(val, DictConfig) and val._is_none()):
            _need(ref is None or isinstance(ref, (str, bool)) or path in NULLABLE,
                  f"{path}=null: needs a value (expected {_type_name(ref)}, default {_show(ref)})")
            continue
        if ref is None:
            continue
        _need(_same_type(val, ref), f"{path}={_show(val)}: expected {_type_name(ref)} (default {_show(ref)}), "
              f"got {_type_name(val)}")
        if isinstance(ref, ListConfig) and len(ref) and not any(_is_interp(x) for x in ref._content):
            kinds = {_type_name(x) for x in ref}
            for i, item in enumerate(val):
                _need(any(_same_type(item, x) for x in ref),
                      f"{path}[{i}]={_show(item)}: expected {' or '.join(sorted(kinds))} (default {_show(ref)}), "
                      f"got {_type_name(item)}")


def _show(v) -> str:
    if isinstance(v, (DictConfig, ListConfig)):
        from omegaconf import OmegaConf

        return str(OmegaConf.to_container(v))
    return repr(v)


def check_numbers(node, prefix="") -> None:
    """No inf/nan anywhere, no integer beyond int64; ``seed`` fits numpy's and torch's seeding (32 bits)."""
    items = node.items() if isinstance(node, DictConfig) else enumerate(node)
    for key, val in items:
        path = f"{prefix}.{key}" if isinstance(node, DictConfig) else f"{prefix}[{key}]"
        path = path.lstrip(".")
        if path.startswith("hydra"):
            continue
        if isinstance(val, (DictConfig, ListConfig)):
            check_numbers(val, path)
        elif isinstance(val, float):
            _need(math.isfinite(val), f"{path}={val}: must be a finite number")
        elif isinstance(val, int) and not isinstance(val, bool):
            _need(-INT64 - 1 <= val <= INT64, f"{path}={val}: out of range for a 64-bit integer")


def check_shapes(cfg: DictConfig) -> None:
    """Cross-key shapes: seed range, thread count, score term, attention heads, mini batch vs N."""
    _need(0 <= cfg.seed < 2**32, f"seed={cfg.seed}: must be in [0, 2**32) (numpy and torch seeding)")
    threads = cfg.hardware.get("num_threads")
    _need(threads is None or (isinstance(threads, int) and not isinstance(threads, bool)),
          f"hardware.num_threads={threads!r}: must be an integer >= 1, or null (torch's default)")
    for key in ("autocast", "compile"):   # null defaults carry no type for the generic check
        v = cfg.hardware.get(key)
        _need(v is None or isinstance(v, bool), f"hardware.{key}={v!r}: must be true, false or null (auto)")
    terms = cfg.reward.get("terms")
    if isinstance(terms, DictConfig) and "score_term" in cfg.reward:
        names = [str(k) for k in terms.keys()]
        st = cfg.reward.score_term
        hint = closest(str(st), names)
        _need(st in names, f"reward.score_term={st!r}: not a term of reward={cfg.reward.get('name')}"
              + (f"; did you mean '{hint}'?" if hint else "") + f" (terms: {', '.join(names)})")
    arch = cfg.model.get("arch")
    if isinstance(arch, DictConfig) and "num_attention_heads" in arch:
        heads, kv, hidden = arch.num_attention_heads, arch.get("num_key_value_heads"), arch.get("hidden_size")
        _need(heads >= 1, f"model.arch.num_attention_heads={heads}: must be >= 1")
        if kv is not None:
            _need(kv >= 1 and heads % kv == 0, f"model.arch.num_attention_heads={heads}: must be a multiple of "
                  f"model.arch.num_key_value_heads={kv} (grouped-query attention)")
        if hidden is not None and arch.get("head_dim") is None:
            _need(hidden % heads == 0, f"model.arch.num_attention_heads={heads}: must divide "
                  f"model.arch.hidden_size={hidden} (head_dim is null: hidden_size / num_attention_heads)")
    t, g = cfg.trainer, cfg.algo.get("group_size")
    b = cfg.data.get("prompts_per_step")
    if isinstance(g, int) and isinstance(b, int) and t.mini_batch_size is not None and t.micro_batch_size is None:
        n = b * g
        _need(t.mini_batch_size <= n, f"trainer.mini_batch_size={t.mini_batch_size}: larger than N = "
              f"data.prompts_per_step*algo.group_size = {n} (with trainer.micro_batch_size=null the micro batch "
              f"is the mini batch); use at most {n}, or null")


def check_resolves(cfg: DictConfig, missing_key) -> None:
    """Every interpolation resolves (``trainer.lr=${trainer.foo}`` names the missing key and its closest);
    ``missing_key(key, overrides, root=cfg)`` is compose's key-suggestion logic (passed in: no import loop)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        first = str(e).splitlines()[0]
        m = re.search(r"Interpolation key '([^']+)' not found", first)
        missing = missing_key(m.group(1), [], root=cfg) if m else None
        did = f"; did you mean '${{{missing[1]}}}'?" if missing and missing[1] else ""
        raise ConfigError(f"{getattr(e, 'full_key', None) or '<config>'}: cannot resolve: {first}{did}") from None


def check_all(cfg: DictConfig, base: DictConfig) -> None:
    check_types(cfg, base)
    check_numbers(cfg)
    check_shapes(cfg)


def yaml_error(err: BaseException) -> str | None:
    """The YAML syntax error under a Hydra/OmegaConf failure, as 'file:line:col: problem', else None."""
    import yaml

    e = err
    for _ in range(6):
        if isinstance(e, yaml.YAMLError):
            mark = getattr(e, "problem_mark", None)
            where = f"{mark.name}:{mark.line + 1}:{mark.column + 1}: " if mark else ""
            return f"{where}YAML syntax error: {getattr(e, 'problem', None) or str(e).splitlines()[0]}"
        e = e.__cause__ or e.__context__
        if e is None:
            return None
    return None
