"""Where results live: safetensors checkpoints with exact resume (:mod:`.checkpoint`) and the small
files a package ships, checked by sha256 (:mod:`.shipped`, ``weights/``). Nothing is pickled."""
