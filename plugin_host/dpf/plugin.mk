# The DPF build proper, run by ./Makefile with DPF_PATH at a writable copy of DPF.
NAME = BarforgePlayer
NATIVE = ../native
FILES_UI = BarforgePlayerUI.cpp
FILES_DSP = BarforgePlayer.cpp $(NATIVE)/barforge_shm.c $(NATIVE)/barforge_player_core.c \
            $(NATIVE)/barforge_requests.c $(NATIVE)/barforge_server_status.c

# Objects and the turtle generator go under $(OUT)/.obj (../native's objects in .obj/native), so
# that $(OUT) holds the bundles alone (LV2_PATH, a VST3 or CLAP path can point at it).
DPF_TARGET_DIR = $(OUT)
DPF_BUILD_DIR = $(OUT)/.obj/dpf

include $(DPF_PATH)/Makefile.plugins.mk

# (after the include: Makefile.base.mk sets these) objects of ../native/*.c land in $(OUT)/native
BUILD_C_FLAGS += -I$(NATIVE)
BUILD_CXX_FLAGS += -I$(NATIVE)
LINK_FLAGS += -lrt -lpthread

# lv2_sep: the LV2 DSP and UI binaries apart; jack: the standalone player (DSP + UI, for the
# UI test under Xvfb with jackd's dummy driver)
TARGETS = lv2_sep vst3 clap jack

all: $(TARGETS) $(OUT)/$(NAME).lv2/manifest.ttl

# DPF writes the LV2 turtle from the built library with its generator.
$(OUT)/.obj/lv2_ttl_generator: $(DPF_PATH)/utils/lv2-ttl-generator/lv2_ttl_generator.c
	mkdir -p $(OUT)/.obj
	$(CC) $< -o $@ -ldl

$(OUT)/$(NAME).lv2/manifest.ttl: $(lv2_dsp) $(OUT)/.obj/lv2_ttl_generator
	cd $(OUT)/$(NAME).lv2 && $(OUT)/.obj/lv2_ttl_generator ./$(NAME)_dsp.so >/dev/null

.PHONY: all
