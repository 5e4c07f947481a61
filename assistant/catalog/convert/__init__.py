"""Model converters. Each runs as a child process of a build (``python -m
assistant.catalog.convert.NAME``); importing the package first ties the child to the
process that started it, before the converter's heavy imports (torch, onnx)."""

from assistant.core.lifeline import follow_parent

follow_parent()
