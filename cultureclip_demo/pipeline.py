"""The demo run: build the mini CulTwin, pretrain a tiny CLIP on general Twemoji, fine-tune it several ways over
several seeds, choose each run's WiSE-FT alpha on validation views, score everything once on test views (and other
art styles), and write results and Hub folders."""

from __future__ import annotations

import json
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
from .analysis import summarise
from .config import DemoConfig, resolve
from .emoji_sources import general_emoji, get_style, pairs_drawn_identically
from .finetune_runs import FinetuneJob, load_sets, quiet_datasets, run_jobs, save_sets, save_splits
from .output import check_output_dir, publish, start_staging
from .report import write_reports
from .scoring import score_model


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


def vocabulary_texts(general, catalog, cultwin: datasets.DatasetDict) -> list[str]:
    """Every text the demo's models read: general emoji names, catalog concept names, CulTwin captions."""
    texts = [c.name for c in general] + [c.concept for c in catalog.concepts.values()]
    for split in cultwin.values():
        texts += demo_data.texts_of(split)
    return texts


def run_demo(config: DemoConfig, output_dir: str | Path, device: str = "cpu", progress: bool = True,
             ablation: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run every stage into a staging folder and move the results into `output_dir` at the end; returns the
    summary written to results/summary.json."""
    if device != "cpu":
        raise ValueError(f"--device {device!r}: the demo's tiny models run on cpu only (the trainer places models "
                         "through accelerate; pass cpu)")
    out = Path(output_dir).resolve()
    check_output_dir(out, overwrite)
    staging = start_staging(out)
    summary = _run(config, staging, out, progress, ablation)
    publish(staging, out, {"seeds": config.seeds, "config": config.source, "ablation": ablation})
    return summary


def _run(config: DemoConfig, root: Path, out: Path, progress: bool, ablation: bool) -> dict[str, Any]:
    started = time.perf_counter()
    torch.set_num_threads(config.threads)
    work, results = root / "work", root / "results"
    timer = StageTimer(quiet=not progress)
    size, evaluation = config.model.image_size, config.evaluation
    catalog = load_twin_catalog()

    # 1. the mini CulTwin, through the dataset builder's real pipeline
    cultwin_dir = work / "cultwin"
    build_summary = timer.run("build CulTwin", build_cultwin, config.data_recipe, cultwin_dir, progress=progress)
    cultwin = datasets.load_dataset(str(cultwin_dir))

    # 2. general emoji (twin catalog's emoji left out) and the base model pretrained on them
    twemoji = get_style("twemoji")
    general, skipped = general_emoji(catalog, twemoji.has)
    pretrain_concepts = general[: config.pretrain.max_general_emoji] if config.pretrain.max_general_emoji else general
    tokenizer = build_word_tokenizer(words_of(vocabulary_texts(general, catalog, cultwin)))
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

    # 3. fine-tuning data: per seed, replay rows and an order shared by every method of that seed
    cultwin_rows = datasets.concatenate_datasets([cultwin[s].select_columns(list(demo_data.TEXT_COLUMNS))
                                                  for s in sorted(cultwin)])
    new_words = (sorted(set(words_of(demo_data.texts_of(cultwin_rows)))
                        - set(words_of([c.name for c in pretrain_concepts])))
                 if config.finetune.train_new_words else [])

    def mixtures() -> dict[int, Path]:
        dirs = {}
        for seed in range(config.seeds):
            replay = demo_data.replay_rows(pretrain_concepts, twemoji, config.finetune.replay_rows, size,
                                           config.finetune.view, seed=1000 + seed)
            mixture = demo_data.finetune_mixture(cultwin, replay, seed=seed)
            dirs[seed] = work / "data" / f"finetune-seed{seed}"
            save_splits(dirs[seed], {"finetune": mixture})
            dirs[seed] = dirs[seed] / "finetune"
        return dirs

    with quiet_datasets():
        mixture_dirs = timer.run("render replay views and mixtures", mixtures)

    # 4. the view families: validation (Twemoji) and test (every style); test classes avoid validation's
    val = evaluation.validation
    validation = {"twemoji": demo_data.EvalSets(
        demo_data.twin_eval_set(catalog, twemoji, val.twin_views, size, val.view, seed=val.seed),
        demo_data.general_eval_set(general, twemoji, val.general_classes, val.general_views, size, val.view,
                                   seed=val.seed))}
    validation_classes = demo_data.class_names(validation["twemoji"].general)
    styles = ["twemoji"] + list(evaluation.other_styles)
    test, style_info = {}, {}
    for style_name in styles:
        style = twemoji if style_name == "twemoji" else get_style(style_name)
        drawable = [c for c in general if style.has(c.char)]
        missing = [c.emoji for c in catalog.concepts.values() if not style.has(c.emoji)]
        if missing:
            raise RuntimeError(f"style {style_name!r} cannot draw twin catalog emoji {missing}")
        test_views = evaluation.test
        test[style_name] = timer.run(
            f"render {style_name} test views", lambda: demo_data.EvalSets(
                demo_data.twin_eval_set(catalog, style, test_views.twin_views, size, test_views.view,
                                        seed=test_views.seed),
                demo_data.general_eval_set(drawable, style, test_views.general_classes, test_views.general_views,
                                           size, test_views.view, seed=test_views.seed,
                                           exclude=validation_classes)))
        style_info[style_name] = {"package": style.package, "general_emoji_drawable": len(drawable),
                                  "general_emoji_not_drawable": len(general) - len(drawable),
                                  "twin_pairs_drawn_identically": pairs_drawn_identically(catalog, style)}
    validation_dir = save_sets(work / "data" / "validation", validation)
    test_dir = save_sets(work / "data" / "test", test)
    # every model is scored on the saved sets, so records of the base and of the runs name the same data
    validation = load_sets(str(validation_dir), ("twemoji",))
    test = load_sets(str(test_dir), tuple(styles))

    # 5. the base: validation scores (what the selection rule compares with), then test scores
    base_validation_scored = timer.run(
        "score base on validation views", score_model, pretrain.model, processor, validation,
        model_id="cultureclip-demo-base", batch_size=evaluation.batch_size, seed=val.seed, with_records=False)
    base_validation = {task: base_validation_scored.accuracy("twemoji", task) for task in ("twin", "general")}
    base_test = timer.run("score base on test views", score_model, pretrain.model, processor, test,
                          model_id="cultureclip-demo-base", batch_size=evaluation.batch_size,
                          seed=evaluation.test.seed, with_records=True,
                          bootstrap_resamples=evaluation.bootstrap_resamples, family_settings=evaluation.test.view)

    # 6. fine-tuning jobs: every method for every seed
    methods = config.methods(ablation)
    jobs = [FinetuneJob(method, seed, config, variant, str(base_dir), str(mixture_dirs[seed]), str(validation_dir),
                        str(test_dir), str(work / "finetune" / f"{method}-seed{seed}"), tuple(styles),
                        base_validation, tuple(new_words), save_selected=(method == "cultureclip" and seed == 0))
            for seed in range(config.seeds) for method, variant in methods.items()]
    outcomes = timer.run(f"fine-tune, select and test ({len(jobs)} runs, {config.finetune.workers} workers)",
                         run_jobs, jobs, config.finetune.workers, progress)

    # 7. results, card, plots and Hub folders
    summary = summarise(config, list(methods), styles, test, base_test, base_validation, outcomes, ablation)
    summary["data"] = {
        "cultwin_rows": {split: len(ds) for split, ds in cultwin.items()},
        "twin_pairs": len(catalog.pairs),
        "twin_pairs_by_kind": {kind: sum(demo_data.twin_kind(catalog, a, b) == kind for a, b in catalog.pairs)
                               for kind in demo_data.KINDS},
        "general_emoji": len(general), "general_emoji_skipped": skipped,
        "pretraining_emoji": len(pretrain_concepts), "pretraining_examples": 2 * len(pretrain_rows),
        "finetune_rows_per_seed": len(cultwin_rows) + config.finetune.replay_rows,
        "replay_rows_per_seed": config.finetune.replay_rows, "new_words_trained": len(new_words),
        "new_words": new_words, "vocabulary_size": len(tokenizer), "styles": style_info,
        "validation_items": {"twin": 2 * len(validation["twemoji"].twin),
                             "general": len(validation["twemoji"].general)},
        "test_items_per_style": {style: {"twin": 2 * len(sets.twin), "general": len(sets.general)}
                                 for style, sets in test.items()},
    }
    summary["training"] = {
        "pretrain": pretrain.summary(),
        "finetune": {f"{o.method}-seed{o.seed}": {**o.summary, "wall_time_s": o.seconds} for o in outcomes},
        # the trainer counts rows for cultureclip (two examples each) and single examples for clip
        "examples_per_step": {o.method: o.summary["samples_seen"] // max(o.summary["steps"], 1)
                              * (1 if o.method == "plain" else 2) for o in outcomes if o.seed == 0},
    }
    summary["config"] = _jsonable(asdict(config))
    summary["build"] = {"rows": build_summary.get("rows"), "wall_time_s": build_summary.get("wall_time_s")}
    summary["wall_time_s"] = {**timer.seconds, "total_before_reports": round(time.perf_counter() - started, 2)}
    hub_model = next(o for o in outcomes if o.method == "cultureclip" and o.seed == 0)
    timer.run("write reports and Hub folders", write_reports, summary, base_test, outcomes, root, base_dir,
              hub_model, cultwin_dir, test)
    summary["wall_time_s"] = {**timer.seconds, "total": round(time.perf_counter() - started, 2)}
    write_json_atomic(results / "summary.json", summary)
    write_json_atomic(root / "hub" / "results" / "summary.json", summary)
    return summary


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: asdict(v) if hasattr(v, "__dataclass_fields__") else str(v)))


__all__ = ["run_demo", "vocabulary_texts"]
