"""Small parts of the demo, without running it: which words count as new to the base, config checks, art styles."""

from pathlib import Path

import datasets
import pytest

from cultureclip_demo.config import DemoConfigError, load_config
from cultureclip_demo.data import words_new_to


def test_words_new_to_lists_fine_tuning_words_no_pretraining_caption_used():
    mixture = datasets.Dataset.from_dict({
        "caption": ["flag of Chad at sunset", "a red apple"],
        "twin_caption": ["flag of Romania in a park", "a green apple"],
        "concept": ["flag of Chad", "red apple"],
        "twin_concept": ["flag of Romania", "green apple"],
    })
    new = words_new_to(mixture, ["flag of France", "red apple", "green apple", "sunset"])
    assert new == ["a", "at", "chad", "in", "park", "romania"]
    assert words_new_to(mixture, list(mixture["caption"]) + list(mixture["twin_caption"])) == []


def test_workers_must_be_positive(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("inherit: quick.yaml\nfinetune: {workers: 0}\n")
    with pytest.raises(DemoConfigError, match="workers=0"):
        load_config(str(path))


# Pairs a style draws pixel for pixel alike (OpenMoji uses one blue for Chad and Romania, one red for Indonesia and
# Monaco); the demo reports them per style.
IDENTICAL = {"twemoji": [], "openmoji": ["flag of Chad / flag of Romania", "flag of Indonesia / flag of Monaco"],
             "noto": []}


@pytest.mark.parametrize("name", ["twemoji", "openmoji", "noto"])
def test_styles_draw_every_twin_and_report_identical_pairs(name):
    import numpy as np

    from cultureclip_demo.emoji_sources import ICON_SIZE, NotoColorStyle, get_style, pairs_drawn_identically
    from dataset_builder.twin_catalog import load_twin_catalog

    if name == "noto" and not Path(NotoColorStyle.FONT).is_file():
        pytest.skip(f"{NotoColorStyle.FONT} is not installed (Debian package fonts-noto-color-emoji)")
    style = get_style(name)
    catalog = load_twin_catalog()
    for concept in catalog.concepts.values():
        icon = np.asarray(style.icon(concept.emoji).convert("RGBA"))
        assert icon.shape == (ICON_SIZE, ICON_SIZE, 4) and icon[..., 3].max() > 0, concept.concept
    assert pairs_drawn_identically(catalog, style) == IDENTICAL[name]
    assert not style.has("\U000E0FFE")  # unassigned: no glyph (the fonts' fallback is recognised)


# -- the kind of each twin pair, from the catalog's emoji ---------------------------------------------------------
def test_twin_kinds_come_from_the_catalog_emoji():
    from cultureclip_demo.data import twin_kind
    from cultureclip_demo.emoji_sources import is_flag
    from dataset_builder.twin_catalog import load_twin_catalog

    catalog = load_twin_catalog()
    kinds = [twin_kind(catalog, a, b) for a, b in catalog.pairs]
    assert set(kinds) == {"flag", "object"} and len(kinds) == 40
    for (a, b), kind in zip(catalog.pairs, kinds):
        names = catalog.concepts[a].concept, catalog.concepts[b].concept
        assert (kind == "flag") == all(n.startswith("flag of ") for n in names), names
        assert (kind == "flag") == is_flag(catalog.concepts[a].emoji)


# -- WiSE-FT alpha selection -----------------------------------------------------------------------------------
def _selection(**values):
    from cultureclip_demo.config import SelectionSettings

    return SelectionSettings(**values)


def test_selection_takes_the_largest_alpha_within_the_general_drop():
    from cultureclip_demo.selection import select_alpha

    general = {1.0: 0.20, 0.8: 0.27, 0.6: 0.29, 0.4: 0.30, 0.0: 0.31}
    asked = []

    def score(alpha):
        asked.append(alpha)
        return {"twin": alpha, "general": general[alpha]}

    chosen = select_alpha(_selection(alphas=[0.0, 0.4, 0.6, 0.8, 1.0], max_general_drop=0.02), score,
                          {"twin": 0.5, "general": 0.31})
    assert chosen.alpha == 0.6 and not chosen.fallback
    assert asked == [1.0, 0.8, 0.6]  # largest first, stopping at the first that qualifies
    assert [t["alpha"] for t in chosen.tried] == asked
    assert chosen.tried[-1]["general_drop_vs_base"] == pytest.approx(0.02)
    assert "validation" in chosen.rule and "2 points" in chosen.rule


def test_selection_falls_back_to_the_smallest_drop_when_none_qualifies():
    from cultureclip_demo.selection import select_alpha

    general = {1.0: 0.10, 0.5: 0.15, 0.3: 0.14}
    chosen = select_alpha(_selection(alphas=[1.0, 0.5, 0.3], max_general_drop=0.01),
                          lambda a: {"twin": 0.6, "general": general[a]}, {"twin": 0.5, "general": 0.30})
    assert chosen.fallback and chosen.alpha == 0.5 and len(chosen.tried) == 3


# -- paired bootstrap ----------------------------------------------------------------------------------------------
def test_paired_bootstrap_on_known_differences():
    import numpy as np

    from cultureclip_demo.paired import paired_bootstrap

    same = paired_bootstrap(np.zeros((3, 40)), resamples=200)
    assert (same["mean"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    better = paired_bootstrap(np.ones((2, 10)), groups=[f"g{i // 2}" for i in range(10)], resamples=200)
    assert better["ci_low"] == better["ci_high"] == 1.0 and better["groups"] == 5 and better["unit"] == "group"
    rng = np.random.default_rng(0)
    noisy = rng.choice([-1.0, 0.0, 1.0], size=(5, 400), p=[0.2, 0.5, 0.3])
    result = paired_bootstrap(noisy, resamples=2000, seed=1)
    assert result["ci_low"] < result["mean"] < result["ci_high"]
    assert result["mean"] == pytest.approx(noisy.mean())
    assert result == paired_bootstrap(noisy, resamples=2000, seed=1)  # seeded
    assert result["per_seed"] == pytest.approx(noisy.mean(axis=1).tolist())


def test_group_resampling_is_wider_when_items_of_a_group_agree():
    import numpy as np

    from cultureclip_demo.paired import paired_bootstrap

    # 20 groups of 12 items; within a group all items share the group's difference (views of one twin pair)
    rng = np.random.default_rng(2)
    per_group = rng.choice([-1.0, 1.0], size=20, p=[0.4, 0.6])
    diff = np.repeat(per_group, 12)[None, :].repeat(3, axis=0)
    groups = [f"pair-{i // 12}" for i in range(diff.shape[1])]
    by_item = paired_bootstrap(diff, resamples=2000)
    by_group = paired_bootstrap(diff, groups, resamples=2000)
    assert by_group["mean"] == by_item["mean"]
    assert by_group["ci_high"] - by_group["ci_low"] > 2 * (by_item["ci_high"] - by_item["ci_low"])


def test_paired_bootstrap_rejects_bad_shapes():
    import numpy as np

    from cultureclip_demo.paired import paired_bootstrap

    with pytest.raises(ValueError, match="seeds, items"):
        paired_bootstrap(np.zeros(5))
    with pytest.raises(ValueError, match="group labels"):
        paired_bootstrap(np.zeros((2, 3)), groups=["a", "b"])


# -- config and command-line errors: one line, exit status 2 ---------------------------------------------------------
@pytest.mark.parametrize("body, expected", [
    ("seeds: five\n", "seeds: expected int, got 'five'"),
    ("selection: {alphas: [1.0, 1.5]}\n", "selection.alphas: expected a non-empty list of numbers in [0, 1]"),
    ("selection: {rule: best_on_test}\n", "selection.rule='best_on_test'"),
    ("evaluation: {test: {twin_views: 0}}\n", "evaluation.test.twin_views=0"),
    ("evaluation: {other_styles: [comic]}\n", "evaluation.other_styles ['comic']"),
    ("claim: {resample_unit: pixel}\n", "claim.resample_unit='pixel'"),
    ("finetune: {bogus: 1}\n", "unknown field(s) ['bogus']"),
    ("ablation: {variants: {plain: {}}}\n", "ablation variant 'plain'"),
    ("finetune: {overrides: {learning_rat: 0.1}}\n", "unknown field"),
    ("ablation: {variants: {odd: {overrides: {loss_mode: sideways}}}}\n", "method odd"),
    ("seeds: [1\n", "cannot read the YAML"),
])
def test_config_errors_print_one_line_and_exit_2(tmp_path, capsys, body, expected):
    from cultureclip_demo.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("inherit: quick.yaml\n" + body)
    argv = ["--output-dir", str(tmp_path / "out"), "--config", str(path)]
    code = main(argv + (["--ablation"] if "variants" in body else []))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("cultureclip-demo: error: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_seeds_option_is_checked_like_the_config(tmp_path, capsys):
    from cultureclip_demo.cli import main

    assert main(["--output-dir", str(tmp_path / "out"), "--quick", "--seeds", "0"]) == 2
    assert "seeds=0: expected >= 1" in capsys.readouterr().err


# -- the output folder -----------------------------------------------------------------------------------------------
def test_output_folder_with_foreign_files_is_refused_without_overwrite(tmp_path, capsys):
    from cultureclip_demo.cli import main
    from cultureclip_demo.output import DemoOutputError, check_output_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["--output-dir", str(out), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    check_output_dir(out, overwrite=True)  # allowed when asked
    (tmp_path / "file").write_text("x")
    with pytest.raises(DemoOutputError, match="not a folder"):
        check_output_dir(tmp_path / "file", overwrite=True)


def test_publish_replaces_the_previous_run_whole(tmp_path):
    from cultureclip_demo.output import ENTRIES, MARKER, check_output_dir, publish, start_staging

    out = tmp_path / "out"
    first = start_staging(out)
    for name in ENTRIES:
        (first / name / "records").mkdir(parents=True)
        (first / name / "records" / "plain-seed4.json").write_text("{}")
    publish(first, out, {"seeds": 5})
    check_output_dir(out, overwrite=False)  # only the demo's own entries: no --overwrite needed
    (out / "keep.txt").write_text("user file")
    second = start_staging(out)
    for name in ENTRIES:
        (second / name).mkdir()
        (second / name / "new.json").write_text("{}")
    publish(second, out, {"seeds": 2})
    for name in ENTRIES:
        assert sorted(p.name for p in (out / name).iterdir()) == ["new.json"]  # nothing of the 5-seed run left
    assert (out / "keep.txt").read_text() == "user file"  # what the demo did not make stays
    assert sorted(p.name for p in out.iterdir()) == sorted([*ENTRIES, MARKER, "keep.txt"])
    assert '"seeds": 2' in (out / MARKER).read_text()
