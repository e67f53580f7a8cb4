"""The demo's written results: markdown tables, the plot, the model card, and the Hub-ready folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from cultureclip_training.artifacts import atomic_dir
from evaluate_suite.report import save_figure, write_text_atomic
from evaluate_suite.runner import write_json_atomic

from .analysis import TWIN_KINDS, layouts
from .finetune_runs import VARIANTS, FinetuneOutcome
from .scoring import Scored


def _pct(stat: dict[str, Any]) -> str:
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def _ci(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "(reference)"
    return f"{100 * entry['mean']:+.1f} [{100 * entry['ci_low']:+.1f}, {100 * entry['ci_high']:+.1f}]"


def _roles(summary: dict[str, Any]) -> list[str]:
    return ["base"] + list(summary["methods"])


def results_table(summary: dict[str, Any], variant: str = "blended") -> str:
    """Rows: models; columns: twin accuracy (all, flag, object) and general accuracy per style (percent, mean ± std
    over seeds), on test views."""
    styles = summary["styles"]
    header = "| model | " + " | ".join(f"twin all ({s}) | twin flag ({s}) | twin object ({s}) | general ({s})"
                                      for s in styles) + " |"
    lines = [header, "|---|" + "---|---|---|---|" * len(styles)]
    for role in _roles(summary):
        cells = []
        for style in styles:
            values = summary["results"][variant][style][role]
            cells += [_pct(values["twin"][kind]) for kind in TWIN_KINDS] + [_pct(values["general"])]
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_markdown(summary: dict[str, Any], variant: str = "blended") -> str:
    """Paired differences (points, mean [95% CI]) per style: twin accuracy minus plain's per kind, and the general
    drop against the base."""
    level = 100 * summary["claim_settings"]["confidence_level"]
    lines = ["| style | method | twin all − plain | twin flag − plain | twin object − plain | "
             "general: base − method |", "|---|---|---|---|---|---|"]
    for style in summary["styles"]:
        paired = summary["paired_difference"][variant][style]
        for method in summary["methods"]:
            twin = paired["twin_minus_plain"].get(method)
            cells = [_ci(twin[kind]) if twin else "(reference)" for kind in TWIN_KINDS]
            lines.append(f"| {style} | {method} | " + " | ".join(cells) + f" | "
                         f"{_ci(paired['general_drop_vs_base'][method])} |")
    return "\n".join(lines) + f"\n\nPoints, mean [{level:g}% paired bootstrap CI over seeds and " \
                              f"{summary['claim_settings']['resample_unit']}s]."


def per_seed_table(summary: dict[str, Any], style: str = "twemoji") -> str:
    """Every per-seed number on one style's test views: chosen alpha, and twin (all/flag/object) and general
    accuracy of the blended and the unblended model."""
    lines = ["| model | seed | alpha | blended twin all / flag / object | blended general | "
             "unblended twin all / flag / object | unblended general |", "|---|---|---|---|---|---|---|"]
    base = summary["results"]["blended"][style]["base"]
    lines.append("| base | - | - | " + " / ".join(f"{100 * base['twin'][k]['mean']:.1f}" for k in TWIN_KINDS)
                 + f" | {100 * base['general']['mean']:.1f} | | |")
    for method in summary["methods"]:
        for seed in range(summary["seeds"]):
            cells = []
            for variant in ("blended", "unblended"):
                values = summary["results"][variant][style][method]
                cells.append(" / ".join(f"{100 * values['twin'][k]['per_seed'][seed]:.1f}" for k in TWIN_KINDS))
                cells.append(f"{100 * values['general']['per_seed'][seed]:.1f}")
            alpha = summary["selection"]["chosen_alpha"][method][seed]
            lines.append(f"| {method} | {seed} | {alpha:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_markdown(summary: dict[str, Any]) -> str:
    """The rule, the base's validation scores, and each run's tries (alpha: validation general / twin)."""
    selection = summary["selection"]
    base = selection["base_validation"]
    lines = [f"Rule: {selection['rule']}.", "",
             f"Base on validation views: twin {100 * base['twin']:.1f}, general {100 * base['general']:.1f}.", "",
             "| method | seed | chosen alpha | tried (alpha: validation general / twin) |", "|---|---|---|---|"]
    for method in summary["methods"]:
        for seed, tried in enumerate(selection["tried"][method]):
            steps = "; ".join(f"{t['alpha']:g}: {100 * t['general']:.1f} / {100 * t['twin']:.1f}" for t in tried)
            note = " (fallback)" if selection["fallback"][method][seed] else ""
            lines.append(f"| {method} | {seed} | {selection['chosen_alpha'][method][seed]:g}{note} | {steps} |")
    return "\n".join(lines)


def ablation_markdown(summary: dict[str, Any], variant: str = "blended") -> str:
    """The ablation table: per method, per seed twin (all/flag/object) and general on Twemoji test views, the
    chosen alphas, and the paired difference against plain."""
    table = summary["ablation"][variant]
    lines = ["| method | seed | alpha | twin all | twin flag | twin object | general |",
             "|---|---|---|---|---|---|---|"]
    for method in table["methods"]:
        row = table["rows"][method]
        for seed in range(summary["seeds"]):
            alpha = f"{row['chosen_alpha'][seed]:g}" if variant == "blended" else "1"
            lines.append(f"| {method} | {seed} | {alpha} | "
                         + " | ".join(f"{100 * row['twin'][k]['per_seed'][seed]:.1f}" for k in TWIN_KINDS)
                         + f" | {100 * row['general']['per_seed'][seed]:.1f} |")
    lines += ["", "| method | twin all − plain | twin flag − plain | twin object − plain | "
              "general: base − method |", "|---|---|---|---|---|"]
    for method in table["methods"]:
        row = table["rows"][method]
        twin = row["twin_minus_plain"]
        lines.append(f"| {method} | " + " | ".join(_ci(twin[k]) if twin else "(reference)" for k in TWIN_KINDS)
                     + f" | {_ci(row['general_drop_vs_base'])} |")
    return "\n".join(lines)


def results_markdown(summary: dict[str, Any]) -> str:
    """results.md: the claim, the tables of both variants, per-seed numbers and the selection."""
    verdict = "holds" if summary["claim"]["holds"] else "does not hold"
    parts = ["# CultureCLIP demo results (test views)", "",
             f"Claim: **{verdict}** ({summary['claim']['rule']}).", ""]
    parts += [f"- {line}" for line in summary["claim"]["statements"]]
    for variant in ("blended", "unblended"):
        parts += ["", f"## {variant.capitalize()} models", "", summary["models"][variant] + ".", "",
                  results_table(summary, variant), "", paired_markdown(summary, variant)]
    for style in summary["styles"]:
        parts += ["", f"## Per seed ({style})", "", per_seed_table(summary, style)]
    parts += ["", "## WiSE-FT alpha, chosen on validation views", "", selection_markdown(summary)]
    if "ablation" in summary:
        parts += ["", "## Ablation (blended models)", "", ablation_markdown(summary, "blended"),
                  "", "## Ablation (unblended models)", "", ablation_markdown(summary, "unblended")]
    return "\n".join(parts) + "\n"


def plot_bars(summary: dict[str, Any], path: Path) -> None:
    """Per style: twin accuracy per kind and general accuracy of every model (blended; mean ± std, seeds as
    dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles, roles = summary["styles"], _roles(summary)
    panels = [(style, kind) for style in styles for kind in (*TWIN_KINDS, "general")]
    fig, axes = plt.subplots(len(styles), len(TWIN_KINDS) + 1, figsize=(3.2 * (len(TWIN_KINDS) + 1),
                                                                           3.0 * len(styles)), squeeze=False)
    palette = ["#9e9e9e", "#5c8bd6", "#d6762f", "#6aa84f", "#8e7cc3", "#c27ba0", "#e6b800", "#45818e"]
    for (style, kind), ax in zip(panels, axes.flat):
        values = [summary["results"]["blended"][style][r]["general" if kind == "general" else "twin"] for r in roles]
        values = [v if kind == "general" else v[kind] for v in values]
        ax.bar(range(len(roles)), [100 * v["mean"] for v in values], yerr=[100 * v["std"] for v in values],
               capsize=3, color=[palette[i % len(palette)] for i in range(len(roles))])
        for k, v in enumerate(values):
            ax.scatter([k] * len(v["per_seed"]), [100 * x for x in v["per_seed"]], s=8, color="black", zorder=3)
        ax.set_xticks(range(len(roles)), roles, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{style}: {'general' if kind == 'general' else kind + ' twins'}", fontsize=9)
        ax.set_ylim(0, 100)
        ax.set_ylabel("% (test views)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def model_card(summary: dict[str, Any]) -> ModelCard:
    """The card of hub/model: which model it is and why, how it was made, and the results with their CIs."""
    claim = summary["claim"]
    alpha = summary["selection"]["chosen_alpha"]["cultureclip"][0]
    new_words = summary["data"]["new_words_trained"]
    words = f" and the embedding rows of the {new_words} words no pretraining caption used" if new_words else ""
    identical = "".join(
        f"\nIn {style}, {len(pairs)} twin pairs are drawn pixel for pixel alike ({'; '.join(pairs)}): no model can "
        "separate them there.\n"
        for style, info in summary["data"]["styles"].items() if (pairs := info["twin_pairs_drawn_identically"]))
    test, validation = summary["views"]["test"]["view"], summary["views"]["validation"]["view"]
    test_views = (f"|rotation| {test['min_rotation']:g}-{test['max_rotation']:g} degrees, scale "
                  f"{test['min_scale']:g}-{test['max_scale']:g}")
    validation_rotation = f"{validation['min_rotation']:g}-{validation['max_rotation']:g}"
    kinds, rule = summary["data"]["twin_pairs_by_kind"], summary["selection"]["rule"]
    data = ModelCardData(license="cc-by-4.0", library_name="transformers",
                         pipeline_tag="zero-shot-image-classification",
                         tags=["clip", "cultureclip", "demo", "twemoji", "lora"])
    statements = "\n".join(f"- {line}" for line in claim["statements"])
    body = f"""
# CultureCLIP offline demo (tiny CLIP on Twemoji)

A tiny CLIP pretrained from scratch on Twemoji images captioned with their CLDR names (the twin catalog's emoji
left out), then fine-tuned with LoRA (q/v projections of every layer of both towers){words} on the mini CulTwin mixed
with general replay rows, using the CultureCLIP objective (twins kept together in a batch).

**Which model this is, and why.** This folder holds the seed-0 CultureCLIP model with its adapter merged in and
blended with the base by WiSE-FT at alpha {alpha:g}: (1 - {alpha:g}) x base + {alpha:g} x fine-tuned weights. The
alpha was chosen by a rule fixed in the demo's config and applied to validation views only: {rule}.
It is the blended model because the claim is about keeping general ability close to the base, and the rule is what
keeps it there; the unblended fine-tuned model is `adapter/` on `base/` (also reported below). Load this one with
`AutoModel.from_pretrained(path, trust_remote_code=True)` and `AutoProcessor.from_pretrained(path)`.

## Results

Test views: {test_views} (outside every training view, and outside the validation views'
{validation_rotation} degrees), scored once after every choice was made. Percent, mean ± sample std over
{summary['seeds']} fine-tuning seeds (the base is one model). Twin accuracy: each image of a catalog pair chooses between its own name and its
twin's, for all {summary['data']['twin_pairs']} pairs and separately for the {kinds['flag']} flag and
{kinds['object']} object pairs. General accuracy: zero-shot classification among
{summary['config']['evaluation']['test']['general_classes']} general emoji outside the twin catalog.

Blended models (each run at the alpha it chose):

{results_table(summary, 'blended')}

Unblended models:

{results_table(summary, 'unblended')}
{identical}
Paired differences, blended models (seed s of each method against seed s of plain, on the same items):

{paired_markdown(summary, 'blended')}

Claim: **{'holds' if claim['holds'] else 'does not hold'}** ({claim['rule']}).

{statements}

Every per-seed number (Twemoji test views):

{per_seed_table(summary)}

![results](results.png)

## Attribution

Twemoji graphics by Twitter, Inc and other contributors, CC-BY 4.0. OpenMoji (evaluation only) by the OpenMoji
project, CC BY-SA 4.0. Emoji names from the `emoji` package (Unicode CLDR).
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _copy_tree(source: Path, target: Path, ignore=None) -> None:
    atomic_dir(target, lambda temporary: shutil.copytree(source, temporary, ignore=ignore, dirs_exist_ok=True))


def record_name(model: str, style: str, task: str) -> str:
    return f"{model}__{style}__{task}.json"


def write_answers(path: Path, test_layout, base_test: Scored,
                  outcomes: list[FinetuneOutcome]) -> None:
    """Every model's 1/0 answer per test item, with each item's group and kind: what the paired CIs come from."""
    models = {"base": base_test.answers}
    for outcome in outcomes:
        for variant in VARIANTS:
            models[f"{outcome.method}-seed{outcome.seed}-{variant}"] = outcome.tested[variant].answers
    layout = {style: {task: {"groups": item.groups, "kinds": item.kinds} for task, item in tasks.items()}
              for style, tasks in test_layout.items()}
    write_json_atomic(path, {"views": "test", "layout": layout, "models": models})


def write_reports(summary: dict[str, Any], base_test: Scored, outcomes: list[FinetuneOutcome], root: Path,
                  base_dir: Path, hub_model: FinetuneOutcome, cultwin_dir: Path, test_sets) -> None:
    """results/ (records, answers, tables, plot, card) and hub/{model,adapter,base,dataset,results}."""
    results, hub = root / "results", root / "hub"
    for style, tasks in base_test.records.items():
        for task, record in tasks.items():
            write_json_atomic(results / "records" / record_name("base", style, task), record)
    for outcome in outcomes:
        for variant in VARIANTS:
            if variant == "blended" and outcome.tested["blended"] is outcome.tested["unblended"]:
                continue  # alpha 1 was chosen: the blend is the unblended model, recorded once
            for style, tasks in outcome.tested[variant].records.items():
                for task, record in tasks.items():
                    name = record_name(f"{outcome.method}-seed{outcome.seed}-{variant}", style, task)
                    write_json_atomic(results / "records" / name, record)
    write_answers(results / "answers.json", layouts(test_sets), base_test, outcomes)
    write_text_atomic(results / "results.md", results_markdown(summary))
    plot_bars(summary, results / "results.png")
    card = model_card(summary)

    hub.mkdir(parents=True, exist_ok=True)
    if hub_model.selected_dir is None:
        raise RuntimeError("the seed-0 CultureCLIP run did not save its selected blend")
    _copy_tree(Path(hub_model.selected_dir), hub / "model")  # the model that was evaluated as "blended"
    card.save(str(hub / "model" / "README.md"))
    shutil.copy2(results / "results.png", hub / "model" / "results.png")
    _copy_tree(hub_model.artifacts.adapter_dir, hub / "adapter")
    _copy_tree(base_dir, hub / "base")
    _point_adapter_at_base(hub / "adapter")
    _copy_tree(cultwin_dir, hub / "dataset", ignore=shutil.ignore_patterns("run"))
    _copy_tree(results, hub / "results", ignore=shutil.ignore_patterns("*.png", "*.md"))
    card.save(str(results / "model_card.md"))


def _point_adapter_at_base(adapter_dir: Path) -> None:
    """The adapter's base is the pretrained tiny CLIP shipped beside it in hub/base."""
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = "../base"
    write_json_atomic(path, config)


__all__ = ["ablation_markdown", "model_card", "paired_markdown", "per_seed_table", "plot_bars", "record_name",
           "results_markdown", "results_table", "selection_markdown", "write_answers", "write_reports"]
