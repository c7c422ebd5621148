"""recbole_bbqrec: BBQRec (Behavior-Bind Quantization for Multi-Modal Sequential
Recommendation, arXiv 2504.06636) as a RecBole 1.2.1 plugin.

Data flows one way: ``preprocess`` -> stage 1 ``tokenizers`` (semantic IDs) -> stage 2
``model`` (generative recommender) -> RecBole's evaluator -> ``results/`` -> ``compare``.
"""

__version__ = "0.1.0"
