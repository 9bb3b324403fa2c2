"""Using a built dataset for training: where the data goes after `build`.

`keras_support` streams batches of a split from the file into Keras, with the flux-preserving
preprocessing layer and a reference model. Needs the optional `keras` extra; nothing here is
imported by the CLI.
"""
