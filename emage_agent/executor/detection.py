"""Open-vocabulary detection (OWLv2 by default, GroundingDINO as an option) for detector verification.

Both load through transformers' zero-shot detection classes; the post-processing differs by model type.
Boxes come back as ``[ymin, xmin, ymax, xmax]`` in 0..1000, the form the VLM's issues use.
"""

from __future__ import annotations

from PIL import Image

from emage_agent.core.detection import Detection
from emage_agent.executor.models import ModelManager


def _box(xyxy: list[float], width: int, height: int) -> list[int] | None:
    x0, y0, x1, y1 = xyxy

    def norm(v: float, side: int) -> int:
        return int(min(max(round(v * 1000 / side), 0), 1000))

    box = [norm(y0, height), norm(x0, width), norm(y1, height), norm(x1, width)]
    return box if box[0] < box[2] and box[1] < box[3] else None


def detect(manager: ModelManager, image: Image.Image, labels: list[str], threshold: float) -> list[Detection]:
    """Every box whose best label scores at least ``threshold``."""
    import torch

    model, processor = manager.detector()
    image = image.convert("RGB")
    grounding = model.config.model_type == "grounding-dino"
    text = ". ".join(labels) + "." if grounding else [labels]
    inputs = processor(text=text, images=image, return_tensors="pt").to(manager.device)
    with torch.inference_mode():
        outputs = model(**inputs)
    sizes = [(image.height, image.width)]
    if grounding:
        result = processor.post_process_grounded_object_detection(
            outputs, inputs.input_ids, threshold=threshold, text_threshold=threshold, target_sizes=sizes
        )[0]
        names = [str(label) for label in result.get("text_labels", result.get("labels"))]
    else:
        result = processor.post_process_grounded_object_detection(
            outputs, threshold=threshold, target_sizes=sizes, text_labels=[labels]
        )[0]
        names = [str(label) for label in result["text_labels"]]
    found: list[Detection] = []
    for name, score, xyxy in zip(names, result["scores"].tolist(), result["boxes"].tolist(), strict=True):
        box = _box(xyxy, image.width, image.height)
        if box is not None:
            found.append(Detection(label=name, score=round(min(max(float(score), 0.0), 1.0), 4), box=box))
    return found
