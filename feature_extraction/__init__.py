"""Region features for your own images: a torchvision Faster R-CNN (ResNet-FPN), region
selection with bottom-up-attention semantics, extraction into a region store, detector
training with COCO evaluation, and shard merging.

    model, config = load_detector("detector_dir")          # or a torchvision .pth
    extractor = RegionExtractor(model, ExtractSettings(min_boxes=10, max_boxes=100))
    report = extract_regions(from_directory("images/"), extractor, "regions.lmdb")
"""

from feature_extraction.config import DetectorConfig, toyworld_config
from feature_extraction.detector import build_detector, load_detector, save_detector
from feature_extraction.extract import ExtractReport, extract_regions
from feature_extraction.images import from_coco, from_directory, from_list, shard
from feature_extraction.regions import ExtractSettings, RegionExtractor, select_regions

__all__ = [
    "DetectorConfig", "ExtractReport", "ExtractSettings", "RegionExtractor",
    "build_detector", "extract_regions", "from_coco", "from_directory", "from_list",
    "load_detector", "save_detector", "select_regions", "shard", "toyworld_config",
]
