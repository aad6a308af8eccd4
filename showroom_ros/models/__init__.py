"""Fast3R (facebookresearch/fast3r, CVPR 2025) and ShowRoom's distilled student, ROS-free (torch only).

Typical use::

    model = Fast3R.from_pretrained("jedyang97/Fast3R_ViT_Large_512")
    prediction = predict_scene(model, ["a.jpg", "b.jpg", "c.jpg"], size=512, dtype="bf16")
    cloud = prediction.colored_points(conf_percentile=50)

Imports no other showroom_ros folder (torch only), so the models load anywhere.
"""

from showroom_ros.models.config import DecoderConfig, EncoderConfig, Fast3RConfig, HeadConfig, student_config
from showroom_ros.models.decoder import draw_random_image_ids, sequential_image_ids
from showroom_ros.models.fast3r import Fast3R
from showroom_ros.models.loading import CheckpointError
from showroom_ros.models.postprocess import (
    Similarity,
    align_local_to_global,
    estimate_focal,
    estimate_poses,
    umeyama_similarity,
)
from showroom_ros.models.predict import ColoredPoints, Fast3RPrediction, predict_scene, resolve_dtype
from showroom_ros.models.preprocess import preprocess_images, view_colors

FAST3R_RELEASE_REPO = "jedyang97/Fast3R_ViT_Large_512"

__all__ = [
    "FAST3R_RELEASE_REPO",
    "CheckpointError",
    "ColoredPoints",
    "DecoderConfig",
    "EncoderConfig",
    "Fast3R",
    "Fast3RConfig",
    "Fast3RPrediction",
    "HeadConfig",
    "Similarity",
    "align_local_to_global",
    "draw_random_image_ids",
    "estimate_focal",
    "estimate_poses",
    "predict_scene",
    "preprocess_images",
    "resolve_dtype",
    "sequential_image_ids",
    "student_config",
    "umeyama_similarity",
    "view_colors",
]
