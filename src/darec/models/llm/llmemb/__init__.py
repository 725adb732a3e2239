"""LLMEmb: LLM-generated item embeddings (SCFT) for any sequential recommender."""

from darec.data.item_embeddings import EmbeddingFileError, load_item_embeddings, save_item_embeddings
from darec.models.llm.llmemb.prompts import augment, item_attributes, item_prompt
from darec.models.llm.llmemb.scft import EmbedConfig, embed_items, mean_pool, pca

__all__ = ["EmbedConfig", "EmbeddingFileError", "augment", "embed_items", "item_attributes", "item_prompt",
           "load_item_embeddings", "mean_pool", "pca", "save_item_embeddings"]
