"""Generation defaults from where users keep them: CLI flag > the checkpoint's generation_config.json > genexport.

`resolve_generation_settings` returns the graph defaults for either rule family and, per setting, where the
value came from (recorded in the manifest). A value onnxruntime's operators cannot honour is refused with a
one-line error when it was a CLI flag, and reported as ignored when it came from generation_config.json (the
export still runs, and the note names `--rules transformers`, which honours it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gen_export.errors import GenExportError
from gen_export.search.hf_search import EarlyStopping, HfOptions
from gen_export.search.search_graph import SearchMode

CLI, CONFIG, GENEXPORT = "cli", "generation_config.json", "genexport default"

#: genexport's own defaults where neither the CLI nor generation_config.json says anything. top_k 50 is
#: transformers' GenerationConfig default (used by generate(do_sample=True)); onnxruntime's Sampling has no top_k.
GENEXPORT_DEFAULTS: dict[str, Any] = {
    "num_beams": 4, "num_return_sequences": 1, "max_length": None, "min_length": 0, "max_new_tokens": 0,
    "min_new_tokens": 0, "length_penalty": 1.0, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
    "early_stopping": False, "do_sample": False, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
    "eos_token_id": None,
}
TRANSFORMERS_DEFAULTS: dict[str, Any] = GENEXPORT_DEFAULTS | {"top_k": 50}


@dataclass
class ResolvedSettings:
    mode: SearchMode
    values: dict[str, Any]
    sources: dict[str, str]
    hf_options: HfOptions | None
    notes: list[str] = field(default_factory=list)

    def length_forms(self) -> dict[str, int | None]:
        """`GenerationDefaults`' length fields: one form per bound, absolute or in new tokens.

        transformers' rules feed max/min_new_tokens as graph inputs of their own (`hf_options`), so only the
        absolute bounds go here. For onnxruntime's operators a new-token bound is translated later (longest parity
        prompt + N). A CLI flag beats a generation_config.json value of the other form; between two config values
        generate's own precedence holds (new tokens win); two CLI flags are left for `check_length_forms` to refuse.
        """
        v, src = self.values, self.sources
        max_length, min_length = v["max_length"], v["min_length"]
        if self.hf_options is not None:
            return {"max_length": max_length, "min_length": min_length}
        # 0 means "unset" in genexport's defaults and in generation_config.json; a CLI flag is taken as given
        # (`check_length_forms` refuses --max-new-tokens 0).
        max_new = v["max_new_tokens"] if src["max_new_tokens"] == CLI else v["max_new_tokens"] or None
        min_new = v["min_new_tokens"] if src["min_new_tokens"] == CLI else v["min_new_tokens"] or None
        if max_new is not None and max_length is not None and not (src["max_length"] == src["max_new_tokens"] == CLI):
            if src["max_length"] == CLI:
                max_new = None
            else:
                max_length = None
        if min_new is not None and min_length and not (src["min_length"] == src["min_new_tokens"] == CLI):
            if src["min_length"] == CLI:
                min_new = None
            else:
                min_length = 0
        return {"max_length": max_length, "min_length": min_length, "max_new_tokens": max_new,
                "min_new_tokens": min_new}


def read_generation_config(model_dir: Path) -> dict[str, Any]:
    """The generation keys genexport uses, as written in MODEL/generation_config.json (absent: {})."""
    path = Path(model_dir) / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise GenExportError(f"{path} is not valid JSON ({error})", "fix or remove generation_config.json") from None
    return {k: v for k, v in data.items() if k in GENEXPORT_DEFAULTS and v is not None}


def _eos_ids(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    return tuple(int(v) for v in value) if isinstance(value, list) else (int(value),)


def resolve_generation_settings(model_dir: Path, rules: str, search: str | None,
                                cli: dict[str, Any]) -> ResolvedSettings:
    """Merge CLI values (None = not given) over generation_config.json over genexport's defaults."""
    config = read_generation_config(model_dir)
    base = TRANSFORMERS_DEFAULTS if rules == "transformers" else GENEXPORT_DEFAULTS
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, default in base.items():
        if cli.get(key) is not None:
            values[key], sources[key] = cli[key], CLI
        elif key in config:
            values[key], sources[key] = config[key], CONFIG
        else:
            values[key], sources[key] = default, GENEXPORT
    if search is not None:
        mode, sources["search"] = _mode(search), CLI
    else:
        mode = SearchMode.SAMPLING if values["do_sample"] else (
            SearchMode.BEAM if values["num_beams"] > 1 or sources["num_beams"] == GENEXPORT else SearchMode.GREEDY)
        sources["search"] = sources["do_sample"] if values["do_sample"] else sources["num_beams"]
    notes: list[str] = []
    early = EarlyStopping.parse(values["early_stopping"])
    eos = _eos_ids(values["eos_token_id"])
    if rules != "transformers":
        # What onnxruntime's operators cannot do: a CLI flag is refused, a config value ignored with a note.
        # (max_new_tokens / min_new_tokens are honoured: `length_forms` turns them into the graph's absolute
        # max_length / min_length defaults for the parity prompts.)
        unsupported = {"early_stopping": early is not EarlyStopping.FALSE, "top_k": bool(values["top_k"]),
                       "eos_token_id": eos is not None and len(eos) > 1}
        for key, bad in unsupported.items():
            if not bad:
                continue
            if sources[key] == CLI:
                raise GenExportError(f"{key}={values[key]} cannot be honoured by onnxruntime's search operators",
                                     "use --rules transformers (generate's own rules in standard ONNX)")
            notes.append(f"generation_config.json sets {key}={values[key]}, which onnxruntime's operators cannot "
                         "honour: ignored (--rules transformers honours it)")
            values[key] = GENEXPORT_DEFAULTS[key] if key != "eos_token_id" else eos[:1] if eos else None
        hf_options = None
    else:
        hf_options = HfOptions(early_stopping=early, eos_token_ids=eos, max_new_tokens=int(values["max_new_tokens"]),
                               min_new_tokens=int(values["min_new_tokens"]),
                               top_k=int(values["top_k"]) if mode is SearchMode.SAMPLING or sources["top_k"] == CLI
                               else 0)
    if mode is not SearchMode.SAMPLING:
        # Sampling-only settings from a config mean nothing to beam/greedy graphs (generate ignores them too).
        for key in ("temperature", "top_p", "top_k"):
            if sources[key] != CLI:
                values[key] = GENEXPORT_DEFAULTS[key]
    return ResolvedSettings(mode, values, sources, hf_options, notes)


def _mode(search: str) -> SearchMode:
    try:
        return SearchMode(search)
    except ValueError:
        raise GenExportError(f"unknown search '{search}'", "use --search beam, greedy or sampling") from None
