"""Data sources (each config in conf/data/ names one as its source) and the data module that serves them."""
