"""Text knowledge shared by generation and QA: crisis cues, real-help pointers, feelings and PII
(``signals``, from ``configs/signals.yaml``), and the normalised word n-grams that statistics and
duplicate detection agree on (``ngrams``)."""
