"""LoRA and LoKr adapters of the DiT, served per request and never merged into the shared weights.

One base model serves many adapters at once: each targeted ``nn.Linear`` of the decoder adds
``scale · ΔW x`` for the rows that asked for an adapter, as a low-rank (LoRA) or Kronecker (LoKr) product,
so rows of one merged forward may carry different adapters, or none.

- :mod:`.formats`: the on-disk layouts users train with upstream ACE-Step (PEFT, LyCORIS) → an
  :class:`AdapterSpec`, checked against the served model from the file headers alone.
- :mod:`.updates`: the per-layer updates and their products with the activations.
- :mod:`.weights`: an :class:`AdapterSpec` → a :class:`LoadedAdapter` on the model's device.
- :mod:`.cache`: the loaded adapters, least recently used first out, bounded in bytes.
- :mod:`.routing`: which rows of the running forward carry which adapter; the decoder's Linear hooks.
- :mod:`.library`: one folder of adapters for one served model (what the engine and ListModels use).
"""

from .formats import AdapterSpec
from .library import AdapterLibrary
from .routing import AdapterUse, adapter_rows
from .weights import LoadedAdapter

__all__ = ["AdapterLibrary", "AdapterSpec", "AdapterUse", "LoadedAdapter", "adapter_rows"]
