"""Model building, never imported by the worker: datasets, architectures, the offline backbone port,
training, evaluation and calibration, and the generator of training photos (``ml.synth``).

Installed with the ``train`` extra (``pip install 'listing-image-processor[train]'``).
Imports point one way: ``processor.ml`` uses the runtime (decode, model), never the reverse.
"""
