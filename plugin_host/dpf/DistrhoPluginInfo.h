/* What DPF needs to know about the Barforge Player at compile time (one source, every format). */
#ifndef DISTRHO_PLUGIN_INFO_H_INCLUDED
#define DISTRHO_PLUGIN_INFO_H_INCLUDED

#define DISTRHO_PLUGIN_BRAND "Barforge"
#define DISTRHO_PLUGIN_NAME "Barforge Player"
#define DISTRHO_PLUGIN_URI "http://barforge.dev/plugins/player"
#define DISTRHO_PLUGIN_CLAP_ID "dev.barforge.player"
#define DISTRHO_PLUGIN_BRAND_ID Brfg
#define DISTRHO_PLUGIN_UNIQUE_ID BfPl

#define DISTRHO_PLUGIN_HAS_UI 1
#define DISTRHO_UI_USE_NANOVG 1
#define DISTRHO_UI_USER_RESIZABLE 0
#define DISTRHO_UI_DEFAULT_WIDTH 520
#define DISTRHO_UI_DEFAULT_HEIGHT 196
#define DISTRHO_PLUGIN_IS_RT_SAFE 1
#define DISTRHO_PLUGIN_IS_SYNTH 0
#define DISTRHO_PLUGIN_NUM_INPUTS 2  /* the capture ring's source */
#define DISTRHO_PLUGIN_NUM_OUTPUTS 2
#define DISTRHO_PLUGIN_WANT_TIMEPOS 1
#define DISTRHO_PLUGIN_WANT_LATENCY 1 /* reported as 0: clips play from memory, on the grid */
#define DISTRHO_PLUGIN_WANT_STATE 1   /* the prompt, saved with the session */
#define DISTRHO_PLUGIN_WANT_FULL_STATE 1 /* getState: the host saves the prompt */

#define DISTRHO_PLUGIN_LV2_CATEGORY "lv2:GeneratorPlugin"
#define DISTRHO_PLUGIN_VST3_CATEGORIES "Fx|Generator|Stereo"
#define DISTRHO_PLUGIN_CLAP_FEATURES "audio-effect", "stereo"

#endif
