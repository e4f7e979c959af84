"""Darknet's own files: ``.cfg`` network definitions and ``.weights`` parameter files."""

from .cfg import conv_layers, count_parameters, parse_cfg
from .weights import read_weights, write_weights

__all__ = ["conv_layers", "count_parameters", "parse_cfg", "read_weights", "write_weights"]
