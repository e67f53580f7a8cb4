"""Bad input gives an EvalDataError naming the benchmark, the row and the field."""

import datasets
import pytest

from evaluate_suite import EvalDataError, evaluate_model
from evaluate_suite.__main__ import main

from evalsuite_fixtures import crope_dataset, cultwin_dataset, globalrg_retrieval_dataset, mcq_dataset, write_folder


def test_missing_column_is_named(tiny):
    ds = globalrg_retrieval_dataset().remove_columns("universal")
    with pytest.raises(EvalDataError, match=r"globalrg_retrieval.*missing column\(s\) \['universal'\]"):
        evaluate_model(*tiny, "globalrg_retrieval", ds)


def test_unreadable_image_names_row_and_field(tiny):
    ds = crope_dataset().cast_column("definition_images", datasets.List(datasets.Image(decode=False)))
    rows = ds.to_dict()
    rows["definition_images"][1][0] = {"bytes": b"definitely not a png", "path": None}
    bad = datasets.Dataset.from_dict(rows, features=ds.features)
    with pytest.raises(EvalDataError, match=r"row 1, field 'definition_images\[0\]': unreadable image"):
        evaluate_model(*tiny, "crope", bad)


def test_answer_not_among_options_names_row(tiny):
    ds = mcq_dataset()
    rows = ds.cast_column("image", datasets.Image(decode=False)).to_dict()
    rows["answer"][2] = "paella"
    bad = datasets.Dataset.from_dict(rows, features=ds.features)
    with pytest.raises(EvalDataError, match=r"row 2, field 'answer': answer 'paella' is not among the options"):
        evaluate_model(*tiny, "cultureverse_mcq", bad)


def test_crope_answer_must_be_yes_or_no(tiny):
    ds = crope_dataset()
    rows = ds.cast_column("image", datasets.Image(decode=False)).cast_column(
        "definition_images", datasets.List(datasets.Image(decode=False))).to_dict()
    rows["answer"][0] = "maybe"
    bad = datasets.Dataset.from_dict(rows, features=ds.features)
    with pytest.raises(EvalDataError, match=r"row 0, field 'answer'"):
        evaluate_model(*tiny, "crope", bad)


def test_empty_benchmark(tiny):
    empty = globalrg_retrieval_dataset().select([])
    with pytest.raises(EvalDataError, match="has no rows"):
        evaluate_model(*tiny, "globalrg_retrieval", empty)
    # Rows exist but none qualifies: every universal is in fewer than 4 regions.
    few = globalrg_retrieval_dataset().select([6, 7])
    with pytest.raises(EvalDataError, match=r"no items to score \(no universal is seen in >= 4 regions"):
        evaluate_model(*tiny, "globalrg_retrieval", few)


def test_cli_reports_errors_with_nonzero_exit(tiny_dir, tmp_path, capsys):
    test = cultwin_dataset()["test"].remove_columns("twin_concept")
    folder = write_folder(tmp_path / "bad_cultwin", {"test": test})
    code = main(["run", "--model", str(tiny_dir), "--benchmarks", "cultwin", "--output-dir", str(tmp_path / "out"),
                 "--data-dir", f"cultwin={folder}"])
    assert code == 2
    assert "missing column(s) ['twin_concept']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # A benchmark without a Hub dataset needs --data-dir.
    assert main(["run", "--model", str(tiny_dir), "--benchmarks", "cultwin", "--output-dir", str(tmp_path)]) == 2
    assert "pass --data-dir cultwin=PATH" in capsys.readouterr().err
