"""Policy and value models: causal LMs (HF or tiny from config) and their tokenizers."""
