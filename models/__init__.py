"""Model manifests shipped with Enclave (recipes for `enclave models build`) and their chat
templates: package data, read with importlib.resources (see assistant/core/resources.py)."""
