"""The training recipes, apart from the runtime: ``data`` (the loop corpus), ``training`` (codec,
AR LM and MAGNeT LM objectives) and ``evaluation`` (metrics and suites). They import one way,
data -> training -> evaluation (a later stage may import an earlier one, never the reverse),
and the runtime (the rest of engine/) never imports them: their ``barforge data / train /
eval`` commands register through pyproject's ``barforge.commands`` entry points."""
