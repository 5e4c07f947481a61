"""Data the tests are built from: the seeded retrieval corpus (retrieval_corpus.py) and the answer corpora."""
