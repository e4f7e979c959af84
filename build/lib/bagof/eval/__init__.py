from .coco_eval import coco_evaluate, to_coco_results

__all__ = ["coco_evaluate", "to_coco_results"]
