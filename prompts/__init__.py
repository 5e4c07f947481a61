"""Personas and prompts shipped with Enclave: package data, read with importlib.resources
(see assistant/core/resources.py). Edit the .md files in place."""
