"""Live parity with Meta's SAM 2 predictor (``sam2==1.1.0``) on calibrated random checkpoints (docs/PARITY.md)."""
