"""The demo's numbers: accuracies per seed, per kind of twin and per style; paired differences with bootstrap CIs;
the alpha each run chose; the claim check; and the ablation table. Everything here is computed from the per-item
answers on test views (and, for the choice, the validation scores the runs report)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from .config import METHODS, REFERENCE_METHOD, DemoConfig
from .data import KINDS, EvalSets
from .finetune_runs import VARIANTS, FinetuneOutcome
from .paired import paired_bootstrap, seed_stats
from .scoring import ItemLayout, Scored
from .selection import describe_rule

SCHEMA_VERSION = 2
TWIN_KINDS = ("all",) + KINDS


def layouts(test: dict[str, EvalSets]) -> dict[str, dict[str, ItemLayout]]:
    """Per style and task, the group and kind of every test item."""
    return {style: {"twin": ItemLayout.of_twin(sets.twin), "general": ItemLayout.of_general(sets.general)}
            for style, sets in test.items()}


def answer_matrix(scored: list[Scored], style: str, task: str) -> np.ndarray:
    """(seeds, items) answers of one method."""
    return np.asarray([s.answers[style][task] for s in scored], dtype=float)


def _mask(layout: ItemLayout, kind: str) -> np.ndarray:
    kinds = np.asarray(layout.kinds)
    return np.ones(len(kinds), dtype=bool) if kind == "all" else kinds == kind


class Answers:
    """Test answers of the base and of every (method, seed, variant), as matrices."""

    def __init__(self, base: Scored, outcomes: list[FinetuneOutcome], methods: list[str], seeds: int):
        self.base = base
        by_key = {(o.method, o.seed): o for o in outcomes}
        self.runs = {variant: {m: [by_key[(m, s)].tested[variant] for s in range(seeds)] for m in methods}
                     for variant in VARIANTS}

    def of(self, variant: str, role: str, style: str, task: str) -> np.ndarray:
        if role == "base":
            return answer_matrix([self.base], style, task)
        return answer_matrix(self.runs[variant][role], style, task)


def accuracy_table(answers: Answers, layout: dict[str, dict[str, ItemLayout]], roles: list[str],
                   variant: str) -> dict[str, Any]:
    """{style: {role: {"twin": {kind: stats}, "general": stats}}} for one variant (percent-free fractions)."""
    out: dict[str, Any] = {}
    for style, tasks in layout.items():
        out[style] = {}
        for role in roles:
            twin = answers.of(variant, role, style, "twin")
            out[style][role] = {
                "twin": {kind: seed_stats(twin[:, _mask(tasks["twin"], kind)].mean(axis=1)) for kind in TWIN_KINDS},
                "general": seed_stats(answers.of(variant, role, style, "general").mean(axis=1)),
            }
    return out


def paired_table(answers: Answers, layout: dict[str, dict[str, ItemLayout]], methods: list[str], variant: str,
                 config: DemoConfig) -> dict[str, Any]:
    """Paired differences with CIs: every method's twin accuracy minus plain's (seed s against seed s), per kind;
    and the base's general accuracy minus every method's (its drop), per style."""
    claim = config.claim

    def bootstrap(diff: np.ndarray, item_layout: ItemLayout, mask: np.ndarray) -> dict[str, Any]:
        groups = [g for g, keep in zip(item_layout.groups, mask) if keep] if claim.resample_unit == "group" else None
        return paired_bootstrap(diff[:, mask], groups, resamples=claim.bootstrap_resamples,
                                level=claim.confidence_level, seed=claim.seed)

    out: dict[str, Any] = {}
    for style, tasks in layout.items():
        plain = answers.of(variant, REFERENCE_METHOD, style, "twin")
        base_general = answers.of(variant, "base", style, "general")
        everything = np.ones(len(tasks["general"].groups), dtype=bool)
        out[style] = {
            "twin_minus_plain": {
                method: {kind: bootstrap(answers.of(variant, method, style, "twin") - plain, tasks["twin"],
                                         _mask(tasks["twin"], kind)) for kind in TWIN_KINDS}
                for method in methods if method != REFERENCE_METHOD},
            "general_drop_vs_base": {
                method: bootstrap(base_general - answers.of(variant, method, style, "general"), tasks["general"],
                                  everything) for method in methods},
        }
    return out


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _ci(entry: dict[str, Any]) -> str:
    return (f"{_points(entry['mean'])} points ({100 * entry['level']:g}% CI {_points(entry['ci_low'])} to "
            f"{_points(entry['ci_high'])})")


def claim_check(paired: dict[str, Any], config: DemoConfig, styles: list[str]) -> dict[str, Any]:
    """The claim on test views, from the paired CIs: per style and kind of twin, CultureCLIP minus plain has its
    lower CI bound above 0; on Twemoji, CultureCLIP's general drop vs the base has its upper bound within the
    limit. `holds` is the headline (Twemoji, all twins, and general); every other check is stated beside it."""
    limit = config.claim.max_general_drop
    checks, statements = {}, []
    for style in styles:
        for kind in TWIN_KINDS:
            entry = paired[style]["twin_minus_plain"]["cultureclip"][kind]
            shown = entry["ci_low"] > 0.0
            checks[f"{style}_{kind}_twins_above_plain"] = shown
            what = "all twins" if kind == "all" else f"{kind} twins"
            verdict = ("holds: the CI lies above 0" if shown else
                       "does NOT hold: the CI reaches 0 or below, so this run does not show CultureCLIP beating plain"
                       " here")
            statements.append(f"{style}, {what}: CultureCLIP minus plain = {_ci(entry)}; {verdict}.")
    drop = paired["twemoji"]["general_drop_vs_base"]["cultureclip"]
    within = drop["ci_high"] <= limit + 1e-12
    checks["twemoji_general_within_limit_of_base"] = within
    statements.append(
        f"twemoji, general accuracy: the base minus CultureCLIP = {_ci(drop)}; "
        + (f"holds: the upper bound is within the {100 * limit:g}-point limit." if within else
           f"does NOT hold: the upper bound exceeds the {100 * limit:g}-point limit."))
    holds = checks["twemoji_all_twins_above_plain"] and within
    return {"holds": bool(holds),
            "rule": (f"on test views, CultureCLIP's twin accuracy minus plain's (seed s against seed s) has its "
                     f"{100 * config.claim.confidence_level:g}% paired bootstrap CI above 0, and the base's general "
                     f"accuracy minus CultureCLIP's has its upper CI bound at most {100 * limit:g} points "
                     f"(resampling seeds and {config.claim.resample_unit}s; the headline is Twemoji, all twins; "
                     "each style and kind is checked the same way)"),
            "twin_gap": paired["twemoji"]["twin_minus_plain"]["cultureclip"]["all"]["mean"],
            "general_drop_vs_base": drop["mean"], "checks": checks, "statements": statements}


def selection_summary(config: DemoConfig, methods: list[str], outcomes: list[FinetuneOutcome],
                      base_validation: dict[str, float]) -> dict[str, Any]:
    """The rule, its setting, the base's validation scores, and per (method, seed) the alpha chosen and every alpha
    tried with its validation scores."""
    by_key = {(o.method, o.seed): o for o in outcomes}
    seeds = range(config.seeds)
    return {"rule": describe_rule(config.selection), "name": config.selection.rule,
            "alphas": sorted(config.selection.alphas, reverse=True),
            "max_general_drop": config.selection.max_general_drop, "views": "validation (twemoji)",
            "base_validation": base_validation,
            "chosen_alpha": {m: [by_key[(m, s)].selection.alpha for s in seeds] for m in methods},
            "fallback": {m: [by_key[(m, s)].selection.fallback for s in seeds] for m in methods},
            "tried": {m: [list(by_key[(m, s)].selection.tried) for s in seeds] for m in methods}}


def pairing_summary(config: DemoConfig, methods: list[str], outcomes: list[FinetuneOutcome]) -> dict[str, Any]:
    """Per seed, the fingerprints of the training rows (content and order) and of the trainable weights before
    the first step, for every method; and whether every method of a seed shares them."""
    by_key = {(o.method, o.seed): o for o in outcomes}
    per_seed = {str(s): {m: by_key[(m, s)].fingerprints for m in methods} for s in range(config.seeds)}
    shared = {kind: all(len({per_seed[s][m].get(kind) for m in methods}) == 1 for s in per_seed)
              for kind in ("data", "init")}
    return {"shared_training_rows_and_order": shared["data"], "shared_initial_weights": shared["init"],
            "per_seed": per_seed}


def ablation_table(accuracies: dict[str, Any], paired: dict[str, Any], selection: dict[str, Any],
                   methods: list[str], config: DemoConfig, variant: str) -> dict[str, Any]:
    """Per method on Twemoji test views (one variant's models): the alpha each run chose, twin accuracy per kind
    and general accuracy per seed, and the paired difference against plain."""
    rows = {}
    for method in methods:
        values = accuracies["twemoji"][method]
        rows[method] = {
            "overrides": config.methods(True)[method].overrides,
            "chosen_alpha": selection["chosen_alpha"][method],
            "twin": {kind: values["twin"][kind] for kind in TWIN_KINDS}, "general": values["general"],
            "twin_minus_plain": paired["twemoji"]["twin_minus_plain"].get(method),
            "general_drop_vs_base": paired["twemoji"]["general_drop_vs_base"][method],
        }
    models = "blended at each run's chosen alpha" if variant == "blended" else "unblended (alpha 1)"
    return {"methods": methods, "views": f"test (twemoji), {models}", "rows": rows}


def summarise(config: DemoConfig, methods: list[str], styles: list[str], test: dict[str, EvalSets], base_test: Scored,
              base_validation: dict[str, float], outcomes: list[FinetuneOutcome], ablation: bool) -> dict[str, Any]:
    """summary.json's body (without the data, training and timing sections the pipeline adds)."""
    layout = layouts(test)
    answers = Answers(base_test, outcomes, methods, config.seeds)
    roles = ["base"] + methods
    results = {variant: accuracy_table(answers, layout, roles, variant) for variant in VARIANTS}
    paired = {variant: paired_table(answers, layout, methods, variant, config) for variant in VARIANTS}
    selection = selection_summary(config, methods, outcomes, base_validation)
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "seeds": config.seeds, "methods": methods, "compared": list(METHODS), "styles": styles,
        "views": {"training": {"pretrain": asdict(config.pretrain.view), "replay": asdict(config.finetune.view)},
                  "validation": asdict(config.evaluation.validation), "test": asdict(config.evaluation.test),
                  "validation_styles": ["twemoji"], "test_styles": styles},
        "models": {"unblended": "each fine-tuned model itself (WiSE-FT alpha 1)",
                   "blended": "each fine-tuned model blended with the base at the alpha its run chose on "
                              "validation views: (1 - alpha) x base + alpha x fine-tuned",
                   "base": "the pretrained base (the same model in both variants)"},
        "selection": selection,
        "results": results,
        "paired_difference": paired,
        "claim_settings": asdict(config.claim),
        "claim": claim_check(paired["blended"], config, styles),
        "claim_unblended": claim_check(paired["unblended"], config, styles),
        "pairing": pairing_summary(config, methods, outcomes),
        "std": "sample standard deviation over fine-tuning seeds (ddof=1)",
    }
    if ablation:
        summary["ablation"] = {variant: ablation_table(results[variant], paired[variant], selection, methods, config,
                                                  variant)
                               for variant in VARIANTS}
    return summary


__all__ = ["SCHEMA_VERSION", "TWIN_KINDS", "ablation_table", "accuracy_table", "claim_check", "layouts",
           "paired_table", "selection_summary", "summarise"]
