"""Enclave's Textual terminal UI (talks only to ``assistant``; see issue "The terminal UI")."""
