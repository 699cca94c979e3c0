"""The prompt files of Part III: replay prompts and the evaluation prompts for identities and the attribute.

Files live in ``tinyworld/prompts/``, one prompt a line; a line starting with ``#``
opens a section named by its first word (``# Seen: ...`` opens ``seen``).

* ``replay.txt`` -- 244 generic prompts (anonymous people, objects, landscapes): the tiny
  world's stand-in for the ~1,000 GPT-written prompts whose images the paper replays and
  computes the Fisher on. No identity name, no attribute synonym; 23 of them are set at the
  beach, the sea or the pool (:func:`replay_prompts` can leave those out).
* ``identity_<first>_<last>.txt`` -- per identity, ``seen`` phrasings and ``paraphrases``.
* ``attribute_named.txt`` / ``attribute_unnamed.txt`` -- prompts that name the attribute, and
  prompts that lead to it without naming it (people at the beach or by the pool).
* ``unrelated.txt`` -- prompts where neither an identity nor the attribute belongs.

Every prompt uses only words the training captions use (a test checks), because the tiny
text encoder learns its words from those captions alone.
"""

from __future__ import annotations

from pathlib import Path

from tinyworld.concepts import IDENTITIES, Identity, words

PROMPT_DIR = Path(__file__).parent / "prompts"


def read_prompt_file(name: str, section: str | None = None) -> list[str]:
    """The prompts of ``prompts/<name>.txt`` (all, or one ``section``)."""
    path = PROMPT_DIR / f"{name}.txt"
    if not path.exists():
        known = sorted(p.stem for p in PROMPT_DIR.glob("*.txt"))
        raise FileNotFoundError(f"no prompt file {path.name}; the files are {known}")
    prompts, current, sections = [], None, set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("#"):
            head = line.lstrip("#").split()
            current = head[0].rstrip(":.").lower() if head else None
            sections.add(current)
        elif line and (section is None or current == section):
            prompts.append(line)
    if section is not None and section not in sections:
        raise ValueError(f"{path.name} has no section {section!r}; it has {sorted(s for s in sections if s)}")
    return prompts


def replay_prompts(exclude_words: tuple[str, ...] = ()) -> list[str]:
    """Generic prompts for replay and the Fisher; drop those containing any of ``exclude_words``
    (e.g. ``("beach", "sea", "sand", "pool")`` to keep the attribute-prone places out)."""
    drop = {w.lower() for w in exclude_words}
    return [p for p in read_prompt_file("replay") if not drop & set(words(p))]


def _identity(which: int | str | Identity) -> Identity:
    if isinstance(which, Identity):
        return which
    if isinstance(which, int):
        if not 0 <= which < len(IDENTITIES):
            raise IndexError(f"identity index {which} outside 0..{len(IDENTITIES) - 1}")
        return IDENTITIES[which]
    for ident in IDENTITIES:
        if which.lower() in (ident.name.lower(), ident.slug):
            return ident
    raise ValueError(f"unknown identity {which!r}; the identities are {[i.name for i in IDENTITIES]}")


def identity_prompts(which: int | str | Identity, section: str | None = None) -> list[str]:
    """Prompts naming one identity: ``section="seen"``, ``"paraphrases"`` or both (``None``)."""
    return read_prompt_file(f"identity_{_identity(which).slug}", section)


def attribute_prompts(named: bool = True) -> list[str]:
    """Prompts that name the attribute (``named=True``) or lead to it unnamed."""
    return read_prompt_file("attribute_named" if named else "attribute_unnamed")


def unrelated_prompts() -> list[str]:
    return read_prompt_file("unrelated")


def unknown_words(prompts: list[str]) -> dict[str, list[str]]:
    """Words of each prompt that no training caption contains (empty when all are known)."""
    from tinyworld.scenes import caption_vocabulary

    vocab = caption_vocabulary()
    found = {p: [w for w in words(p) if w not in vocab] for p in prompts}
    return {p: ws for p, ws in found.items() if ws}
