/* The Barforge Player's parameters, in DPF's index order: shared by the DSP and the UI. */
#ifndef BARFORGE_PLAYER_PARAMETERS_HPP
#define BARFORGE_PLAYER_PARAMETERS_HPP

enum ParameterIndex {
    kBars, kGenerate, kContinue, kSlot, kFreeBpm, kFreeBeatsPerBar, kCapture, kPlaying,
    kServerState, kServerProgress, kServerError, kParameterCount
};

#define BARFORGE_PROMPT_KEY "prompt"

#endif
