"""Detector and classifier networks built from small blocks (timm ``layers/`` style)."""
