"""A `datasets.GeneratorBasedBuilder` over a finished CulTwin folder (for code that wants a builder object).

`datasets` >= 4 runs no loading scripts, so this class is used directly:
`CulTwinBuilder(data_dir=DIR).download_and_prepare(); ds = builder.as_dataset()`.
`load_dataset(DIR)` reads the same folder through its parquet files and card and needs no builder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import datasets

from .schema import row_features


class CulTwinBuilder(datasets.GeneratorBasedBuilder):
    """Yields the exported rows of `data_dir` split by split."""

    VERSION = datasets.Version("1.0.0")

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description="CulTwin twin-concept samples", features=row_features(),
                                    license="see the dataset card")

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        if not self.config.data_dir:
            raise ValueError("CulTwinBuilder needs data_dir= pointing at an exported CulTwin folder")
        root = Path(self.config.data_dir)
        gens = []
        for split in ("train", "validation", "test"):
            files = sorted((root / "data").glob(f"{split}-*.parquet"))
            if not files:
                raise FileNotFoundError(f"{root / 'data'}: no {split}-*.parquet shards (is the build finished?)")
            gens.append(datasets.SplitGenerator(name=split, gen_kwargs={"files": [str(f) for f in files]}))
        return gens

    def _generate_examples(self, files: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        import pyarrow.parquet as pq

        features = row_features()
        for f in files:
            for row in pq.read_table(f).to_pylist():
                # Rows are stored encoded (images as {bytes, path}); the builder re-encodes them on write. With
                # caption_pairing "all" one concept image meets several twin images, so the twin's index joins the key.
                twin = f"/{row['twin_sample_index']}" if "twin_sample_index" in row else ""
                yield f"{row['pair_id']}#{row['sample_index']}{twin}", {k: row[k] for k in features}
