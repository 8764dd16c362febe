"""Test-session setup: never touch the network.

``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import; set it here, before any
test module imports transformers, datasets or trl.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
