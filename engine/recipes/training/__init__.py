"""Training: codec, AR LM and MAGNeT LM objectives, and ``barforge train``."""
