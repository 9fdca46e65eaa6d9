"""Other libraries' noise off the CLI's stderr: what the user cannot act on never shows, the rest not under --quiet.

Runs before the server packages are imported (the CLI imports them lazily), so environment switches and
logger filters are in place when diffusers, transformers and tqdm read them. Only the standard library
here: the light SDK install has none of those packages.

- Always: advice addressed to the developers of this project, not its users: diffusers' "pip install
  accelerate" (this project loads without accelerate on purpose) and its note on casting the VAE.
- Under --quiet also: FutureWarning/DeprecationWarning lines, third-party progress bars (tqdm,
  huggingface_hub, transformers' "Loading weights") and the libraries' warnings.
"""

from __future__ import annotations

import logging
import os
import warnings

# Logger -> message fragments that are never for the user.
_NEVER_SHOWN = {
    "diffusers.models.modeling_utils": ("pip install accelerate", "should be kept in float32"),
}


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_libraries(quiet: bool) -> None:
    """Install the filters (idempotent); ``quiet`` also mutes warnings and progress bars of other libraries."""
    for name, fragments in _NEVER_SHOWN.items():
        logger = logging.getLogger(name)  # the very logger diffusers will use: filters set now stay
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))
    if not quiet:
        return
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    for variable, value in (
        ("TQDM_DISABLE", "1"),  # tqdm >= 4.66 takes its defaults from TQDM_* variables
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),  # transformers' bars follow huggingface_hub's switch
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("DIFFUSERS_VERBOSITY", "error"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
    ):
        os.environ.setdefault(variable, value)
