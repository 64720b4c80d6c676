/*
 * Barforge Player, the DPF build: one source for LV2, VST3 and CLAP. It plays the clips the
 * Barforge server publishes in shared memory, locked to the host's transport, and copies its
 * audio input into the capture ring. The playback engine is the shared C core
 * (plugin_host/native/barforge_player_core.c); this file maps DPF's parameters, state and time
 * position onto it. run() never allocates, locks, logs or makes a system call: requests go to
 * RequestThread through a lock-free ring.
 */
#include "DistrhoPlugin.hpp"
#include "PlayerParameters.hpp"
#include "RequestThread.hpp"

#include "barforge_player_core.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

START_NAMESPACE_DISTRHO

static constexpr double kCheckSeconds = 0.5; /* how often to look for a replaced segment */

class BarforgePlayer : public Plugin
{
public:
    BarforgePlayer() : Plugin(kParameterCount, 0, 1)
    {
        bf_player_reset(&fPlayer, getSampleRate());
        fSeg = fRequests.initialSegment();
        allocateInputCopy(getBufferSize());
        fRequests.startThread();
    }

    ~BarforgePlayer() override
    {
        fRequests.stopThread(2000); /* it may be looking at fSeg (its newest segment) */
        bf_segment_free(fSeg);      /* ours; the thread frees the ones it still holds */
    }

protected:
    const char* getLabel() const override { return "barforge_player"; }
    const char* getDescription() const override
    {
        return "Plays the loops a Barforge server generates, on the host's bar grid.";
    }
    const char* getMaker() const override { return "Barforge"; }
    const char* getHomePage() const override { return "https://barforge.dev"; }
    const char* getLicense() const override { return "ISC"; }
    uint32_t getVersion() const override { return d_version(0, 2, 0); }
    int64_t getUniqueId() const override { return d_cconst('B', 'f', 'P', 'l'); }

    void initAudioPort(bool input, uint32_t index, AudioPort& port) override
    {
        port.groupId = kPortGroupStereo;
        Plugin::initAudioPort(input, index, port);
    }

    void initParameter(uint32_t index, Parameter& p) override
    {
        p.hints = kParameterIsAutomatable;
        switch (index)
        {
        case kBars:
            p.hints |= kParameterIsInteger;
            p.name = "Bars"; p.symbol = "bars";
            p.ranges.min = 1.0f; p.ranges.max = 64.0f; p.ranges.def = 4.0f;
            break;
        case kGenerate: /* a button: pressed is 1 (DPF's VST3 wrapper never passes triggers on) */
            p.hints |= kParameterIsBoolean | kParameterIsInteger;
            p.name = "Generate"; p.symbol = "generate";
            break;
        case kContinue:
            p.hints |= kParameterIsBoolean | kParameterIsInteger;
            p.name = "Continue"; p.symbol = "continue";
            break;
        case kSlot:
            p.hints |= kParameterIsInteger;
            p.name = "Slot (-1: newest)"; p.symbol = "slot";
            p.ranges.min = -1.0f; p.ranges.max = 63.0f; p.ranges.def = -1.0f;
            break;
        case kFreeBpm:
            p.name = "Tempo without host"; p.symbol = "bpm"; p.unit = "BPM";
            p.ranges.min = 20.0f; p.ranges.max = 300.0f; p.ranges.def = 120.0f;
            break;
        case kFreeBeatsPerBar:
            p.hints |= kParameterIsInteger;
            p.name = "Beats per bar without host"; p.symbol = "beats_per_bar";
            p.ranges.min = 1.0f; p.ranges.max = 16.0f; p.ranges.def = 4.0f;
            break;
        case kCapture:
            p.hints |= kParameterIsBoolean | kParameterIsInteger;
            p.name = "Capture input"; p.symbol = "capture";
            p.ranges.def = 1.0f;
            break;
        case kPlaying:
            p.hints = kParameterIsOutput | kParameterIsInteger;
            /* slot + 1, 0 for nothing: outputs start at 0 in some hosts (DPF's standalone
             * only tells its UI about changes from 0) */
            p.name = "Playing"; p.symbol = "playing";
            p.ranges.min = 0.0f; p.ranges.max = 64.0f; p.ranges.def = 0.0f;
            p.enumValues.count = 65;
            p.enumValues.restrictedMode = true;
            p.enumValues.values = new ParameterEnumerationValue[65];
            p.enumValues.values[0] = ParameterEnumerationValue(0, "nothing");
            for (int k = 0; k < 64; ++k)
                p.enumValues.values[k + 1] = ParameterEnumerationValue(k + 1, String("slot ") + String(k));
            break;
        case kServerState: /* barforge_server_status.h's states, in that order */
            p.hints = kParameterIsOutput | kParameterIsInteger;
            p.name = "Server"; p.symbol = "server_state";
            p.ranges.min = 0.0f; p.ranges.max = BF_SERVER_N_STATES - 1; p.ranges.def = 0.0f;
            p.enumValues.count = BF_SERVER_N_STATES;
            p.enumValues.restrictedMode = true;
            p.enumValues.values = new ParameterEnumerationValue[BF_SERVER_N_STATES];
            for (int k = 0; k < BF_SERVER_N_STATES; ++k)
                p.enumValues.values[k] = ParameterEnumerationValue(k, bf_server_state_names[k]);
            break;
        case kServerProgress:
            p.hints = kParameterIsOutput;
            p.name = "Progress"; p.symbol = "progress";
            p.ranges.min = 0.0f; p.ranges.max = 1.0f; p.ranges.def = 0.0f;
            break;
        case kServerError: /* 0 none, else 1 + index in bf_server_error_codes */
            p.hints = kParameterIsOutput | kParameterIsInteger;
            p.name = "Server error"; p.symbol = "server_error";
            p.ranges.min = 0.0f; p.ranges.max = BF_SERVER_N_ERRORS; p.ranges.def = 0.0f;
            p.enumValues.count = BF_SERVER_N_ERRORS + 1;
            p.enumValues.restrictedMode = true;
            p.enumValues.values = new ParameterEnumerationValue[BF_SERVER_N_ERRORS + 1];
            p.enumValues.values[0] = ParameterEnumerationValue(0, "none");
            for (int k = 0; k < BF_SERVER_N_ERRORS; ++k)
                p.enumValues.values[k + 1] = ParameterEnumerationValue(k + 1, bf_server_error_codes[k]);
            break;
        }
        fParams[index] = p.ranges.def;
    }

    void initState(uint32_t, State& state) override
    {
        state.hints = kStateIsHostWritable; /* LV2: a patch:writable string for generic UIs */
        state.key = BARFORGE_PROMPT_KEY;
        state.label = "Prompt";
        state.defaultValue = "";
        state.description = "What to generate";
    }

    String getState(const char* key) const override
    {
        return std::strcmp(key, BARFORGE_PROMPT_KEY) == 0 ? fRequests.prompt() : String();
    }

    void setState(const char* key, const char* value) override
    {
        if (std::strcmp(key, BARFORGE_PROMPT_KEY) == 0)
            fRequests.setPrompt(value);
    }

    float getParameterValue(uint32_t index) const override { return fParams[index]; }

    /* A press of Generate or Continue is latched here: a UI's click can press and release
     * between two blocks (the JACK standalone calls this from its UI thread). */
    void setParameterValue(uint32_t index, float value) override
    {
        if ((index == kGenerate || index == kContinue) && value >= 0.5f && fParams[index] < 0.5f)
            (index == kGenerate ? fGeneratePressed : fContinuePressed).store(true);
        fParams[index] = value;
    }

    void bufferSizeChanged(uint32_t frames) override { allocateInputCopy(frames); }
    void sampleRateChanged(double rate) override { bf_player_reset(&fPlayer, rate); }

    void activate() override
    {
        bf_player_reset(&fPlayer, getSampleRate());
        fFramesToCheck = 0;
        setLatency(0);
    }

    void run(const float** inputs, float** outputs, uint32_t frames) override
    {
        bf_segment* seg = fRequests.takeFresh(fSeg);
        if (seg != fSeg) /* the voices point into the old mapping */
        {
            bf_player_drop_voices(&fPlayer);
            fSeg = seg;
        }
        if (fFramesToCheck <= frames)
        {
            if (!fRequests.checkInFlight())
            {
                request(BF_REQ_CHECK);
                fFramesToCheck = (uint32_t)(kCheckSeconds * getSampleRate());
            }
        }
        else
        {
            fFramesToCheck -= frames;
        }

        /* Hosts may process in place: keep the input for the capture ring first. */
        const bool capture = fParams[kCapture] >= 0.5f && fSeg != nullptr && frames <= fInputFrames;
        if (capture)
            for (int c = 0; c < 2; ++c)
                std::memcpy(fInputCopy[c].data(), inputs[c], frames * sizeof(float));

        bf_player_poll(&fPlayer, fSeg, std::lround(fParams[kSlot]), fParams[kFreeBpm],
                       fParams[kFreeBeatsPerBar]);
        const TimePosition& t = getTimePosition();
        if (t.bbt.valid)
        {
            const double bpb = t.bbt.beatsPerBar;
            bf_host_position pos;
            pos.beat = (t.bbt.bar - 1) * bpb + (t.bbt.beat - 1) + t.bbt.tick / t.bbt.ticksPerBeat;
            pos.bpm = t.bbt.beatsPerMinute;
            pos.beats_per_bar = bpb;
            pos.speed = t.playing ? 1.0 : 0.0;
            pos.frame = (long long)t.frame;
            bf_player_position(&fPlayer, &pos);
        }
        bf_player_render(&fPlayer, outputs[0], outputs[1], 0, frames);

        /* Buttons: one request per press, after the block's position (it carries the tempo). */
        if (fGeneratePressed.exchange(false))
            request(BF_REQ_GENERATE);
        if (fContinuePressed.exchange(false))
            request(BF_REQ_CONTINUE);

        if (fSeg != nullptr)
        {
            /* Samples played out of a slot that changed during the block may be torn. */
            if (bf_player_torn(&fPlayer, fSeg))
            {
                std::memset(outputs[0], 0, frames * sizeof(float));
                std::memset(outputs[1], 0, frames * sizeof(float));
            }
            bf_capture_state st;
            if (bf_capture_state_read(fSeg, &st) == BF_OK)
                fRingRate = st.sample_rate;
            if (capture && fPlayer.speed != 0.0 && fRingRate == (uint32_t)getSampleRate())
            {
                const float* planes[2] = {fInputCopy[0].data(), fInputCopy[1].data()};
                bf_capture_write(fSeg, planes, 2, 1, frames, fPlayer.beat);
            }
        }
        fParams[kPlaying] = (float)(bf_player_playing(&fPlayer) + 1);
        fParams[kServerState] = (float)fRequests.serverState();
        fParams[kServerProgress] = fRequests.serverProgress();
        fParams[kServerError] = (float)fRequests.serverError();
    }

private:
    void request(bf_request_kind kind) noexcept
    {
        bf_request r;
        std::memset(&r, 0, sizeof r); /* (the prompt is filled in by the request thread) */
        r.kind = kind;
        r.bars = (uint32_t)std::lround(fParams[kBars]);
        r.beats_per_bar = (uint32_t)std::lround(bf_player_beats_per_bar(&fPlayer));
        r.rate = (uint32_t)getSampleRate();
        r.capture = fParams[kCapture] >= 0.5f;
        r.bpm = (float)bf_player_bpm(&fPlayer);
        fRequests.push(r);
    }

    void allocateInputCopy(uint32_t frames)
    {
        for (auto& plane : fInputCopy)
            plane.assign(frames, 0.0f);
        fInputFrames = frames;
    }

    float fParams[kParameterCount] = {};
    bf_player fPlayer;
    bf_segment* fSeg = nullptr;
    RequestThread fRequests;
    uint32_t fFramesToCheck = 0, fRingRate = 0, fInputFrames = 0;
    std::atomic<bool> fGeneratePressed{false}, fContinuePressed{false};
    std::vector<float> fInputCopy[2];

    DISTRHO_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR(BarforgePlayer)
};

Plugin* createPlugin() { return new BarforgePlayer(); }

END_NAMESPACE_DISTRHO
