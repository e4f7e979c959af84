"""Box geometry, IoU family, NMS and anchors: plain tensor functions, no model state."""
