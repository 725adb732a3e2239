"""LLM-based recommenders: backbone loading, attention masking, the adapter zoo, DARec (and E4SRec) and LLMEmb."""
