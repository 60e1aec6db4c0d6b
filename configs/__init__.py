"""Training presets (``motion-adapters train NAME``) and accelerate configs, shipped as package data."""
