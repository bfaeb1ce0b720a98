"""Narratives: a causal language model, LoRA-adapted under DP at each site, writes one note per
synthetic record from a serialisation of that record. No Flower imports here (the client and
server wire it in); ``NarrativeModel`` in ``common.text.narrative_model`` is the facade.
"""
