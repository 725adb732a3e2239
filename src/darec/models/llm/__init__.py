"""LLM-based recommenders: backbone loading, attention masking, and (in progress) DARec, MixRec, LLMEmb."""
