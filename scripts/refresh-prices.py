#!/usr/bin/env python3
"""Rebuilds data/model-prices.json, Switchyard's price catalog, from LiteLLM's public,
community-maintained price list (MIT licence):
https://github.com/BerriAI/litellm/blob/main/model_prices_and_context_window.json

    python3 scripts/refresh-prices.py                 # download the current list
    python3 scripts/refresh-prices.py --from FILE     # or convert a copy you already have
                                                      # (the litellm wheel ships one as
                                                      # litellm/model_prices_and_context_window_backup.json)

Only what the gateway can route is kept: chat, completion, responses and embedding models of
the vendor families below, priced in USD per million tokens. Prices in a config's `price:`
override the catalog. Standard library only.
"""

import argparse
import datetime
import json
import sys
import urllib.request

SOURCE_URL = (
    "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json"
)
OUT = "data/model-prices.json"

# LiteLLM's provider names -> the catalog's vendor families (see src/accounting/catalog.rs).
FAMILIES = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "bedrock": "bedrock",
    "bedrock_converse": "bedrock",
    "mistral": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "xai": "xai",
    "deepinfra": "deepinfra",
    "perplexity": "perplexity",
    "cerebras": "cerebras",
    "openrouter": "openrouter",
}
MODES = {"chat", "completion", "responses", "embedding"}


def family_of(provider):
    if provider in FAMILIES:
        return FAMILIES[provider]
    if provider.startswith("vertex_ai"):
        return "vertex"
    return None


def per_mtok(value):
    return None if value is None else round(float(value) * 1_000_000, 6)


def convert(source):
    models = {}
    for key, entry in source.items():
        if not isinstance(entry, dict) or entry.get("mode") not in MODES:
            continue
        family = family_of(entry.get("litellm_provider") or "")
        if family is None:
            continue
        name = key
        for prefix in (entry["litellm_provider"] + "/", family + "/", "vertex_ai/"):
            if name.startswith(prefix):
                name = name[len(prefix):]
        # Region- or size-qualified Bedrock keys ("bedrock/us-east-1/...") are not model ids.
        if family == "bedrock" and "/" in name:
            continue
        inp = entry.get("input_cost_per_token")
        out = entry.get("output_cost_per_token", 0 if entry.get("mode") == "embedding" else None)
        if not isinstance(inp, (int, float)) or not isinstance(out, (int, float)):
            continue
        price = {"input": per_mtok(inp), "output": per_mtok(out)}
        if isinstance(entry.get("cache_read_input_token_cost"), (int, float)):
            price["cached_input"] = per_mtok(entry["cache_read_input_token_cost"])
        if isinstance(entry.get("cache_creation_input_token_cost"), (int, float)):
            price["cache_write"] = per_mtok(entry["cache_creation_input_token_cost"])
        window = entry.get("max_input_tokens") or entry.get("max_tokens")
        if isinstance(window, int):
            price["context_window"] = window
        models.setdefault(family, {})[name] = price
    return models


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", help="a local copy of LiteLLM's JSON")
    parser.add_argument("--version", default=None, help="what the copy is (e.g. 'litellm 1.110.2')")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    if args.source:
        with open(args.source, encoding="utf-8") as f:
            source = json.load(f)
        origin = args.version or args.source
    else:
        with urllib.request.urlopen(SOURCE_URL, timeout=60) as r:
            source = json.load(r)
        origin = args.version or SOURCE_URL
    models = convert(source)
    catalog = {
        "source": "LiteLLM model_prices_and_context_window.json, https://github.com/BerriAI/litellm",
        "licence": "MIT (Copyright (c) 2023 Berri AI)",
        "taken_from": origin,
        "retrieved": datetime.date.today().isoformat(),
        "units": "USD per million tokens; context_window in tokens",
        "refresh": "python3 scripts/refresh-prices.py",
        "models": models,
    }
    # One model per line: refreshes show as readable diffs.
    lines = ["{"]
    for k in ("source", "licence", "taken_from", "retrieved", "units", "refresh"):
        lines.append(f"  {json.dumps(k)}: {json.dumps(catalog[k])},")
    lines.append('  "models": {')
    families = sorted(models)
    for i, family in enumerate(families):
        lines.append(f"    {json.dumps(family)}: {{")
        names = sorted(models[family])
        for j, name in enumerate(names):
            comma = "," if j < len(names) - 1 else ""
            lines.append(f"      {json.dumps(name)}: {json.dumps(models[family][name], sort_keys=True)}{comma}")
        lines.append("    }" + ("," if i < len(families) - 1 else ""))
    lines.append("  }")
    lines.append("}")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    count = sum(len(m) for m in models.values())
    print(f"{args.out}: {count} models in {len(models)} families", file=sys.stderr)


if __name__ == "__main__":
    main()
