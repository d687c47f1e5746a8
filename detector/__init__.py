"""DETR-family detection (transformers) on exactly the pixels it is given, boxes in original-image coordinates.

    from detector import load_detector, detr_target_size
    det = load_detector("facebook/detr-resnet-50")        # or a save_pretrained folder, or configs/detector/*.yaml
    dets = det.detect([resized], original_sizes=[(h, w)])  # list[Detections], COCO xywh in original pixels
"""
from detector.config import DetectorConfig, ModelConfig
from detector.detect import Detections, Detector, detr_target_size
from detector.model import build_model, load_detector, load_model, map_labels, set_trainable, weights_sha256

__all__ = ["DetectorConfig", "ModelConfig", "Detections", "Detector", "detr_target_size", "build_model",
           "load_detector", "load_model", "map_labels", "set_trainable", "weights_sha256"]
