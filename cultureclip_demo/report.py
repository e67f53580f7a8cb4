"""Results of the demo: the summary statistics, the claim check, plots, the model card and the Hub-ready folders."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from cultureclip_training.artifacts import atomic_dir
from evaluate_suite.report import save_figure, write_text_atomic
from evaluate_suite.runner import write_json_atomic

from .config import DemoConfig

ROLES = ("base", "plain", "cultureclip")
MIN_TWIN_GAP = 0.02  # points (as a fraction) CultureCLIP must gain over plain fine-tuning on twins
MAX_GENERAL_DROP = 0.03  # how far CultureCLIP's general accuracy may fall below the base's


def stats(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for a single value) and the values themselves."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": list(values)}


def summarise(records: dict[str, list[dict]], config: DemoConfig, styles: list[str]) -> dict[str, Any]:
    """summary.json's body: per role twin/general accuracy on Twemoji, the same on other styles, and the claim."""
    def metric(role: str, style: str, task: str) -> list[float]:
        key = "accuracy" if task == "twin" else "top1_accuracy"
        return [run[style][task]["metrics"][key] for run in records[role]]

    summary: dict[str, Any] = {
        role: {"twin_accuracy": stats(metric(role, "twemoji", "twin")),
               "general_accuracy": stats(metric(role, "twemoji", "general"))} for role in ROLES
    }
    summary["base"]["note"] = "one pretrained model (per_seed has its single value); fine-tuning seeds vary below"
    summary["other_styles"] = {
        style: {role: {"twin_accuracy": stats(metric(role, style, "twin")),
                       "general_accuracy": stats(metric(role, style, "general"))} for role in ROLES}
        for style in styles if style != "twemoji"
    }
    summary["claim"] = claim_check(summary)
    summary["claim_other_styles"] = {style: ordering(values) for style, values in summary["other_styles"].items()}
    summary["seeds"] = config.seeds
    summary["std"] = "sample standard deviation over fine-tuning seeds (ddof=1)"
    return summary


def ordering(values: dict[str, Any]) -> dict[str, Any]:
    """Whether mean twin accuracy orders cultureclip > plain and cultureclip > base, with the gaps."""
    twin = {role: values[role]["twin_accuracy"]["mean"] for role in ROLES}
    return {"cultureclip_minus_plain": twin["cultureclip"] - twin["plain"],
            "cultureclip_minus_base": twin["cultureclip"] - twin["base"],
            "cultureclip_above_plain": twin["cultureclip"] > twin["plain"]}


def claim_check(summary: dict[str, Any]) -> dict[str, Any]:
    """The demo's claim: CultureCLIP's twin accuracy >= plain's + 2 points and the gap exceeds both seed stds, and
    its general accuracy within 3 points of the base."""
    plain, ours, base = (summary[r] for r in ("plain", "cultureclip", "base"))
    gap = ours["twin_accuracy"]["mean"] - plain["twin_accuracy"]["mean"]
    general_drop = base["general_accuracy"]["mean"] - ours["general_accuracy"]["mean"]
    checks = {
        "twin_gap_at_least_2_points": gap >= MIN_TWIN_GAP,
        "twin_gap_exceeds_both_stds": gap > max(plain["twin_accuracy"]["std"], ours["twin_accuracy"]["std"]),
        "general_within_3_points_of_base": general_drop <= MAX_GENERAL_DROP,
    }
    return {"twin_gap": gap, "general_drop_vs_base": general_drop, **checks, "holds": all(checks.values())}


def _pct(stat: dict[str, Any]) -> str:
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def results_table(summary: dict[str, Any]) -> str:
    """Markdown table: rows are methods, columns twin/general accuracy per style (percent, mean ± std)."""
    styles = ["twemoji"] + list(summary["other_styles"])
    header = "| method | " + " | ".join(f"twin acc. ({s}) | general acc. ({s})" for s in styles) + " |"
    lines = [header, "|---|" + "---|---|" * len(styles)]
    for role in ROLES:
        cells = []
        for style in styles:
            values = summary[role] if style == "twemoji" else summary["other_styles"][style][role]
            cells += [_pct(values["twin_accuracy"]), _pct(values["general_accuracy"])]
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(summary: dict[str, Any]) -> str:
    """Every per-seed number on Twemoji views."""
    lines = ["| method | metric | per seed (%) |", "|---|---|---|"]
    for role in ROLES:
        for metric in ("twin_accuracy", "general_accuracy"):
            values = ", ".join(f"{100 * v:.1f}" for v in summary[role][metric]["per_seed"])
            lines.append(f"| {role} | {metric} | {values} |")
    return "\n".join(lines)


def plot_bars(summary: dict[str, Any], path: Path) -> None:
    """Per-method bars (mean ± std over seeds) of twin and general accuracy for every style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = ["twemoji"] + list(summary["other_styles"])
    fig, axes = plt.subplots(1, 2 * len(styles), figsize=(4 * 2 * len(styles), 3.4), squeeze=False)
    colours = {"base": "#9e9e9e", "plain": "#5c8bd6", "cultureclip": "#d6762f"}
    for i, style in enumerate(styles):
        for j, metric in enumerate(("twin_accuracy", "general_accuracy")):
            ax = axes[0][2 * i + j]
            values = [(summary[r] if style == "twemoji" else summary["other_styles"][style][r])[metric] for r in ROLES]
            ax.bar(ROLES, [100 * v["mean"] for v in values], yerr=[100 * v["std"] for v in values], capsize=4,
                   color=[colours[r] for r in ROLES])
            for k, v in enumerate(values):
                ax.scatter([k] * len(v["per_seed"]), [100 * x for x in v["per_seed"]], s=9, color="black", zorder=3)
            ax.set_title(f"{metric.replace('_', ' ')} ({style})", fontsize=10)
            ax.set_ylim(0, 100)
            ax.set_ylabel("%")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def model_card(summary: dict[str, Any]) -> ModelCard:
    """The card of the merged CultureCLIP demo model: how it was made, the results table and the plot."""
    claim = summary["claim"]
    alpha = summary["training"]["wise_ft_alpha"].get("cultureclip")
    new_words = summary["data"]["new_words_trained"]
    words = f" and the embedding rows of the {new_words} words no pretraining caption used" if new_words else ""
    blend = (f", then blended with the base by WiSE-FT ((1 - {alpha:g}) x base + {alpha:g} x fine-tuned weights, as "
             "evaluated below; `adapter/` is the unblended adapter)" if alpha is not None else "")
    identical = "".join(
        f"\nIn {style}, {len(pairs)} twin pairs are drawn pixel for pixel alike ({'; '.join(pairs)}): no model can "
        "separate them there.\n"
        for style, info in summary["data"]["styles"].items() if (pairs := info["twin_pairs_drawn_identically"]))
    data = ModelCardData(license="cc-by-4.0", library_name="transformers", pipeline_tag="zero-shot-image-classification",
                         tags=["clip", "cultureclip", "demo", "twemoji", "lora"])
    body = f"""
# CultureCLIP offline demo (tiny CLIP on Twemoji)

A tiny CLIP pretrained from scratch on Twemoji images captioned with their CLDR names (the twin catalog's emoji
left out), then fine-tuned with LoRA (q/v projections of every layer of both towers){words} on the mini CulTwin mixed
with general replay rows, using the CultureCLIP objective (twins kept together in a batch). This folder holds the
seed-0 CultureCLIP model with the adapter merged in{blend}. Load it with
`AutoModel.from_pretrained(path, trust_remote_code=True)` and `AutoProcessor.from_pretrained(path)`.

## Results

Held-out views (rotations of 18-28 degrees and scales of 1.0-1.1, both outside every training range; no colour
changes). Percent, mean ± sample std over {summary['seeds']} fine-tuning seeds (the base is one model).
Twin accuracy: each image of a catalog pair chooses between its own name and its twin's. General accuracy:
zero-shot classification among {summary['data']['eval_general_items_per_style'] // max(1, summary['config']['evaluation']['general_views'])}
general emoji outside the twin catalog.

{results_table(summary)}
{identical}
Every number (Twemoji views):

{per_seed_table(summary)}

Claim (CultureCLIP twin accuracy >= plain + 2 points, gap larger than both seed stds, general accuracy within 3
points of the base): **{'holds' if claim['holds'] else 'does not hold'}** (twin gap {100 * claim['twin_gap']:.1f}
points, general drop vs base {100 * claim['general_drop_vs_base']:.1f} points).

![results](results.png)

## Attribution

Twemoji graphics by Twitter, Inc and other contributors, CC-BY 4.0. OpenMoji (evaluation only) by the OpenMoji
project, CC BY-SA 4.0. Emoji names from the `emoji` package (Unicode CLDR).
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _copy_tree(source: Path, target: Path, ignore=None) -> None:
    atomic_dir(target, lambda temporary: shutil.copytree(source, temporary, ignore=ignore, dirs_exist_ok=True))


def write_reports(summary: dict[str, Any], records: dict[str, list[dict]], out: Path, base_dir: Path, artifacts,
                  cultwin_dir: Path) -> None:
    """results/ (records, table, plot) and hub/{model,adapter,base,dataset,results}."""
    results, hub = out / "results", out / "hub"
    for role, runs in records.items():
        for index, run in enumerate(runs):
            for style, tasks in run.items():
                for task, record in tasks.items():
                    name = f"{role}" + (f"-seed{index}" if role != "base" else "") + f"__{style}__{task}.json"
                    write_json_atomic(results / "records" / name, record)
    table = results_table(summary) + "\n\n" + per_seed_table(summary) + "\n"
    write_text_atomic(results / "results.md", table)
    plot_bars(summary, results / "results.png")
    card = model_card(summary)

    hub.mkdir(parents=True, exist_ok=True)
    _copy_tree(artifacts.wise_ft_dir or artifacts.model_dir, hub / "model")  # the model that was evaluated
    card.save(str(hub / "model" / "README.md"))
    shutil.copy2(results / "results.png", hub / "model" / "results.png")
    _copy_tree(artifacts.adapter_dir, hub / "adapter")
    _copy_tree(base_dir, hub / "base")
    _point_adapter_at_base(hub / "adapter")
    _copy_tree(cultwin_dir, hub / "dataset", ignore=shutil.ignore_patterns("run"))
    _copy_tree(results, hub / "results", ignore=shutil.ignore_patterns("*.png", "*.md"))
    card.save(str(results / "model_card.md"))


def _point_adapter_at_base(adapter_dir: Path) -> None:
    """The adapter's base is the pretrained tiny CLIP shipped beside it in hub/base."""
    import json

    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = "../base"
    write_json_atomic(path, config)


__all__ = ["ROLES", "claim_check", "model_card", "plot_bars", "results_table", "stats", "summarise", "write_reports"]
