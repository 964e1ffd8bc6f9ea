"""Fine-tuning: datasets of EnCodec codes (build.py, store.py), LoRA training on the transformers
decoder (train.py), and the result as a catalogue model (adapters.py)."""
