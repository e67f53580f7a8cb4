"""One optimisation step over k micro-batches with feature caching, so the loss sees the whole batch (and, for
reproducing the authors' release, the plain accumulation it used: `plain_step`).

Plain gradient accumulation computes the contrastive loss inside each micro-batch, which shrinks the set of
negatives and changes the objective. Feature caching (the scheme open_clip uses) instead:
1. encodes every micro-batch without gradients and keeps the features;
2. for each micro-batch in turn, re-encodes it with gradients, splices the live features into the cached set,
   computes the loss of the full batch and back-propagates. Only the live slice carries gradient, so after k
   passes every tower parameter has the full-batch gradient.
The loss also depends on logit_scale directly; that path is kept in one pass only (the last one, which is also
the pass DDP synchronises), otherwise its gradient would be counted k times. Each re-encoding replays the RNG
state of its first encoding, so dropout draws the same masks and the spliced features match the cached ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modeling_cultureclip import TwinFeatures, cultureclip_loss
from modeling_cultureclip.loss_cultureclip import FeatureGather, ObjectiveSettings

TWIN_FEATURES = ("image", "twin_image", "caption", "twin_caption", "concept", "twin_concept")
ID_INPUTS = ("concept_ids", "twin_concept_ids")


class FeatureEncoder(nn.Module):
    """Wraps a (PEFT or plain) CultureCLIPModel so that DDP's forward returns the features the loss needs."""

    def __init__(self, model: nn.Module, objective: str):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.objective == "clip":
            image = self.model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
            text = self.model.get_text_features(input_ids=batch["input_ids"],
                                                attention_mask=batch["attention_mask"]).pooler_output
            return {"image": image, "text": text}
        inputs = {name: value for name, value in batch.items() if name not in ID_INPUTS}
        features = self.model.get_twin_features(**inputs)
        return {name: getattr(features, name) for name in TWIN_FEATURES if getattr(features, name) is not None}


def compile_towers(model: nn.Module) -> list[str]:
    """`torch.compile` the vision and text towers of a (PEFT-wrapped or plain) CLIP-family model in place.

    `nn.Module.compile` keeps parameter names, so checkpoints and artifacts are unchanged; shapes that vary
    (text padded per batch) become dynamic after their first recompilation. Returns the compiled towers' names.
    """
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = [name for name in ("vision_model", "text_model") if isinstance(getattr(core, name, None), nn.Module)]
    if not names:
        raise ValueError(f"compile: {type(core).__name__} has no vision_model / text_model to compile")
    for name in names:
        getattr(core, name).compile()
    return names


def clip_contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                          logit_scale_max: float | None = None, gather: FeatureGather | None = None) -> torch.Tensor:
    """CLIPModel's contrastive loss (normalised features, both directions averaged) over gathered columns."""
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    rank = 0 if gather is None else gather.rank
    all_image = image if gather is None else gather(image)
    all_text = text if gather is None else gather(text)
    scale = logit_scale if logit_scale_max is None else logit_scale.clamp(max=torch.log(torch.tensor(logit_scale_max)))
    scale = scale.exp()
    targets = rank * image.shape[0] + torch.arange(image.shape[0], device=image.device)
    return (F.cross_entropy(scale * image @ all_text.T, targets)
            + F.cross_entropy(scale * text @ all_image.T, targets)) / 2


def objective_loss(features: dict[str, torch.Tensor], logit_scale: torch.Tensor, objective: str,
                   settings: ObjectiveSettings, gather: FeatureGather | None = None) -> dict[str, torch.Tensor]:
    """The step's loss and named terms over (spliced, local) features; features are promoted to float32."""
    floats = {name: value.float() if value.is_floating_point() else value for name, value in features.items()}
    if objective == "clip":
        loss = clip_contrastive_loss(floats["image"], floats["text"], logit_scale.float(),
                                     settings.logit_scale_max, gather)
        return {"loss": loss}
    return cultureclip_loss(TwinFeatures(**floats), logit_scale.float(), settings, gather=gather)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _with_ids(features: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**features, **{name: batch[name] for name in ID_INPUTS if name in batch}}


def _splice(cache: Sequence[dict[str, torch.Tensor]], live: dict[str, torch.Tensor], index: int) -> dict:
    return {name: torch.cat([live[name] if j == index else part[name] for j, part in enumerate(cache)])
            for name in live}


def cached_step(
    encoder: nn.Module,
    micro_batches: Sequence[dict[str, torch.Tensor]],
    loss_fn: Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]],
    logit_scale: torch.Tensor,
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], Any] | None = None,
    check: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Accumulate the full-batch gradient of `loss_fn` over `micro_batches`; returns the loss terms (detached).

    `loss_fn(features, logit_scale)` computes the loss; `backward(loss)` back-propagates (accelerator.backward);
    `no_sync()` gives a context that suspends DDP's gradient sync for all passes but the last; `check(terms)` runs
    on the full loss before any gradient is computed (the NaN guard).
    """
    count = len(micro_batches)
    if count == 1:  # nothing to cache: one pass with gradients
        terms = loss_fn(_with_ids(encoder(**micro_batches[0]), micro_batches[0]), logit_scale)
        if check is not None:
            check(terms)
        backward(terms["loss"])
        return {name: value.detach() for name, value in terms.items()}

    states, cache = [], []
    with torch.no_grad():
        for batch in micro_batches:
            states.append(_rng_state())
            cache.append(_with_ids(encoder(**batch), batch))
    resume_state = _rng_state()

    reported: dict[str, torch.Tensor] = {}
    for index, batch in enumerate(micro_batches):
        last = index == count - 1
        _set_rng_state(states[index])
        context = no_sync() if (no_sync is not None and not last) else nullcontext()
        with context:
            live = _with_ids(encoder(**batch), batch)
            scale = logit_scale if last else logit_scale.detach()
            terms = loss_fn(_splice(cache, live, index), scale)
            if index == 0:
                if check is not None:
                    check(terms)
                reported = {name: value.detach() for name, value in terms.items()}
            backward(terms["loss"])
    _set_rng_state(resume_state)
    return reported


Terms = dict[str, torch.Tensor]


def plain_step(encoder: nn.Module, micro_batches: Sequence[Terms], loss_fn: Callable[[Terms, torch.Tensor], Terms],
               logit_scale: torch.Tensor, backward: Callable[[torch.Tensor], None],
               no_sync: Callable[[], Any] | None = None, check: Callable[[Terms], None] | None = None) -> Terms:
    """Plain gradient accumulation, as the authors' release (HF Trainer) trains: returns the mean loss terms.

    Each micro-batch is encoded, its loss computed over its own rows only (pass a `loss_fn` without a cross-process
    gather for the release's per-device negatives), divided by the number of micro-batches and back-propagated, so
    the step's gradient is the mean of the micro-batches' gradients. Same arguments as `cached_step`; `check` runs
    on every micro-batch's loss before its backward pass.
    """
    count = len(micro_batches)
    totals: Terms = {}
    for index, batch in enumerate(micro_batches):
        context = no_sync() if (no_sync is not None and index < count - 1) else nullcontext()
        with context:
            terms = loss_fn(_with_ids(encoder(**batch), batch), logit_scale)
            if check is not None:
                check(terms)
            backward(terms["loss"] / count)
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + value.detach() / count
    return totals


__all__ = ["FeatureEncoder", "cached_step", "clip_contrastive_loss", "compile_towers", "objective_loss",
           "plain_step"]
