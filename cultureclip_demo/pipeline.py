"""The demo run: build the mini CulTwin, pretrain a tiny CLIP on general Twemoji, fine-tune it two ways over several
seeds, evaluate everything on held-out views (and another art style), and write results and Hub folders."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch

from cultureclip_training import build_args, train
from dataset_builder.pipeline import build as build_cultwin
from dataset_builder.twin_catalog import load_twin_catalog
from evaluate_suite.runner import write_json_atomic
from modeling_cultureclip import CultureCLIPModel
from modeling_cultureclip.tiny import build_word_tokenizer, tiny_config, tiny_processor, words_of

from . import data as demo_data
from .config import METHODS, DemoConfig, resolve
from .emoji_sources import general_emoji, get_style, pairs_drawn_identically
from .evaluation import evaluate_one
from .finetune_runs import FinetuneJob, run_jobs, save_job_data
from .report import summarise, write_reports


@dataclass
class StageTimer:
    """Wall seconds per stage, printed as the run goes."""

    seconds: dict[str, float] = field(default_factory=dict)
    quiet: bool = False

    def run(self, name: str, fn, *args, **kwargs):
        if not self.quiet:
            print(f"[demo] {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        value = fn(*args, **kwargs)
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 2)
        return value


def run_demo(config: DemoConfig, output_dir: str | Path, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Run every stage into `output_dir`; returns the summary written to results/summary.json."""
    if device != "cpu":
        raise ValueError(f"--device {device!r}: the demo's tiny models run on cpu only (the trainer places models "
                         "through accelerate; pass cpu)")
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    out = Path(output_dir).resolve()
    work, results, hub = out / "work", out / "results", out / "hub"
    timer = StageTimer(quiet=not progress)
    size = config.model.image_size
    catalog = load_twin_catalog()

    # 1. the mini CulTwin, through the dataset builder's real pipeline
    cultwin_dir = work / "cultwin"
    build_summary = timer.run("build CulTwin", build_cultwin, config.data_recipe, cultwin_dir, progress=progress)
    cultwin = datasets.load_dataset(str(cultwin_dir))

    # 2. general emoji (twin catalog's emoji left out) and the base model pretrained on them
    twemoji = get_style("twemoji")
    general, skipped = general_emoji(catalog, twemoji.has)
    pretrain_concepts = general[: config.pretrain.max_general_emoji] if config.pretrain.max_general_emoji else general
    texts = [c.name for c in general] + [c.concept for c in catalog.concepts.values()]
    for split in cultwin.values():
        texts += demo_data.texts_of(split)
    tokenizer = build_word_tokenizer(words_of(texts))
    processor = tiny_processor(tokenizer, size)
    pretrain_rows = timer.run("render pretraining views", demo_data.pretraining_rows, pretrain_concepts, twemoji,
                              config.pretrain.views_per_emoji, size, config.pretrain.view, seed=0)
    torch.manual_seed(0)
    shape = config.model
    base = CultureCLIPModel(tiny_config(len(tokenizer), image_size=size, patch_size=shape.patch_size,
                                        width=shape.width, vision_layers=shape.vision_layers,
                                        text_layers=shape.text_layers, heads=shape.heads,
                                        projection_dim=shape.projection_dim))
    pretrain_args = build_args(str(resolve(config.pretrain.recipe)),
                               {**config.pretrain.overrides, "output_dir": str(work / "pretrain"),
                                "progress_bar": progress})
    pretrain = timer.run("pretrain base", train, pretrain_args, dataset=pretrain_rows, model=base,
                         processor=processor)
    base_dir = pretrain.artifacts.model_dir

    # 3. fine-tuning data and runs
    replay = timer.run("render replay views", demo_data.replay_rows, pretrain_concepts, twemoji,
                       config.finetune.replay_rows, size, config.finetune.view, seed=1)
    mixture = demo_data.finetune_mixture(cultwin, replay, seed=0)
    new_words = (demo_data.words_new_to(mixture, [c.name for c in pretrain_concepts])
                 if config.finetune.train_new_words else [])

    # 4. held-out evaluation sets per style
    styles = ["twemoji"] + list(config.evaluation.other_styles)
    twin_sets, general_sets, style_info = {}, {}, {}
    for style_name in styles:
        style = twemoji if style_name == "twemoji" else get_style(style_name)
        drawable = [c for c in general if style.has(c.char)]
        missing = [c.emoji for c in catalog.concepts.values() if not style.has(c.emoji)]
        if missing:
            raise RuntimeError(f"style {style_name!r} cannot draw twin catalog emoji {missing}")
        twin_sets[style_name] = timer.run(f"render {style_name} twin views", demo_data.twin_eval_set, catalog, style,
                                          config.evaluation.twin_views, size, config.evaluation.view,
                                          seed=config.evaluation.seed)
        general_sets[style_name] = demo_data.general_eval_set(
            drawable, style, config.evaluation.general_classes, config.evaluation.general_views, size,
            config.evaluation.view, seed=config.evaluation.seed)
        style_info[style_name] = {"package": style.package, "general_emoji_drawable": len(drawable),
                                  "general_emoji_not_drawable": len(general) - len(drawable),
                                  "twin_pairs_drawn_identically": pairs_drawn_identically(catalog, style)}

    records: dict[str, list[dict]] = {"base": [], "plain": [], "cultureclip": []}
    records["base"].append(timer.run("evaluate base", evaluate_one, pretrain.model, processor, twin_sets,
                                     general_sets, config))
    data_dir = timer.run("save fine-tuning data", save_job_data, work / "finetune-data", mixture, twin_sets,
                         general_sets)
    jobs = [FinetuneJob(method, seed, config, str(base_dir), str(data_dir),
                        str(work / "finetune" / f"{method}-seed{seed}"), tuple(styles), tuple(new_words))
            for seed in range(config.seeds) for method in METHODS]
    outcomes = timer.run(f"fine-tune and evaluate ({len(jobs)} runs, {config.finetune.workers} workers)", run_jobs,
                         jobs, config.finetune.workers, progress)
    tuned = {(o.method, o.seed): o for o in outcomes}
    for outcome in outcomes:
        records[outcome.method].append(outcome.record)

    # 5. results, card, plots and Hub folders
    summary = summarise(records, config, styles)
    summary["data"] = {
        "cultwin_rows": {split: len(ds) for split, ds in cultwin.items()},
        "twin_pairs": len(catalog.pairs), "general_emoji": len(general), "general_emoji_skipped": skipped,
        "pretraining_emoji": len(pretrain_concepts), "pretraining_examples": 2 * len(pretrain_rows),
        "finetune_rows": len(mixture), "replay_rows": len(replay), "new_words_trained": len(new_words),
        "new_words": new_words,
        "eval_twin_items_per_style": 2 * len(twin_sets["twemoji"]),
        "eval_general_items_per_style": len(general_sets["twemoji"]), "styles": style_info,
        "vocabulary_size": len(tokenizer),
    }
    summary["training"] = {
        "pretrain": pretrain.summary(),
        "finetune": {f"{m}-seed{s}": {**o.summary, "wall_time_s": o.seconds} for (m, s), o in tuned.items()},
        # the evaluated models blend base and fine-tuned weights when set
        "wise_ft_alpha": {m: tuned[(m, 0)].wise_ft_alpha for m in METHODS},
        # the trainer counts rows for cultureclip (two examples each) and single examples for clip
        "examples_per_step": {m: tuned[(m, 0)].summary["samples_seen"] // max(tuned[(m, 0)].summary["steps"], 1)
                              * (2 if m == "cultureclip" else 1) for m in METHODS},
    }
    summary["config"] = _jsonable(asdict(config))
    summary["build"] = {"rows": build_summary.get("rows"), "wall_time_s": build_summary.get("wall_time_s")}
    summary["wall_time_s"] = {**timer.seconds}
    summary["wall_time_s"]["total_before_reports"] = round(time.perf_counter() - started, 2)
    timer.run("write reports and Hub folders", write_reports, summary, records, out, base_dir,
              tuned[("cultureclip", 0)].artifacts, cultwin_dir)
    summary["wall_time_s"] = {**timer.seconds, "total": round(time.perf_counter() - started, 2)}
    write_json_atomic(results / "summary.json", summary)
    shutil.copy2(results / "summary.json", hub / "results" / "summary.json")
    return summary


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: asdict(v) if hasattr(v, "__dataclass_fields__") else str(v)))


__all__ = ["run_demo"]
