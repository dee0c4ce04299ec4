"""Where examples come from: sources (image folders, tensors, sequences), image decoding
and preprocessing, content fingerprints and their memo, and decoding ahead of the model.
Nothing here knows about models."""
