// PalmTrain: see docs/ARCHITECTURE.md. Files are added per concern.
