"""A trained model used: rebuilt from its checkpoint, the preprocessing contract, export formats, the HTTP app."""
