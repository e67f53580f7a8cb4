"""Image-text retrieval recall@k in both directions, as defined in the CLIP paper."""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

from evaluate_suite.metrics.core import retrieval_recall

_DESCRIPTION = """Recall@k for image->text and text->image retrieval. One example per image: its similarity to every
text, and the indices of the texts that describe it. image->text counts an image as found when any of its texts is
among its k most similar texts; text->image counts a text as found when any of its images is among its k most
similar images."""

_KWARGS = """
Args:
    predictions (list[list[float]]): per image, similarity to each of the N texts (same N for every image).
    references (list[list[int]]): per image, indices of its correct texts (at least one).
    ks (list[int], optional): default [1, 5, 10].
Returns:
    image_to_text_recall@k and text_to_image_recall@k for each k.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RetrievalRecall(evaluate.Metric):
    """CLIP-style recall@k for image-text retrieval."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")),
                 "references": datasets.Sequence(datasets.Value("int64"))}
            ),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10)):
        similarity = np.asarray(predictions, dtype=np.float32)
        if similarity.ndim != 2:
            raise ValueError("every prediction row must have one similarity per text (same length for all images)")
        relevant = np.zeros(similarity.shape, dtype=bool)
        for row, texts in enumerate(references):
            if len(texts) == 0:
                raise ValueError(f"image {row} has no correct text index")
            bad = [t for t in texts if not 0 <= t < similarity.shape[1]]
            if bad:
                raise ValueError(f"image {row}: text indices {bad} outside 0..{similarity.shape[1] - 1}")
            relevant[row, list(texts)] = True
        return retrieval_recall(similarity, relevant, ks=tuple(ks))
