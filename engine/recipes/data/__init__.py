"""Training data: the procedural loop corpus (``barforge data synth``)."""
