/*
 * The Barforge Player's UI (DPF's DGL with NanoVG): a prompt field, the bars, Generate and
 * Continue, the slot playing and the server's status. The prompt is plugin state: every edit
 * is sent with setState (so the host saves it, and the DSP has it before Generate is pressed);
 * the buttons are parameters pressed (1) on mouse down and released (0) on mouse up.
 */
#include "DistrhoUI.hpp"
#include "PlayerParameters.hpp"

#include "barforge_server_status.h"

#include <cmath>
#include <cstdio>
#include <string>

START_NAMESPACE_DISTRHO

namespace {

struct Box {
    double x, y, w, h;
    bool contains(const Point<double>& p) const
    {
        return p.getX() >= x && p.getX() < x + w && p.getY() >= y && p.getY() < y + h;
    }
};

/* The layout, in pixels of the default size. */
constexpr Box kPromptBox{16, 44, 488, 32};
constexpr Box kBarsDown{16, 92, 32, 32}, kBarsUp{120, 92, 32, 32};
constexpr Box kGenerateBox{176, 92, 150, 32}, kContinueBox{340, 92, 164, 32};
constexpr int kPromptMax = 500; /* bytes: the DSP keeps BF_PROMPT_BYTES - 1 */

} // namespace

class BarforgePlayerUI : public UI
{
public:
    BarforgePlayerUI() : UI(DISTRHO_UI_DEFAULT_WIDTH, DISTRHO_UI_DEFAULT_HEIGHT)
    {
        loadSharedResources();
        for (float& v : fParams)
            v = 0.0f;
        fParams[kBars] = 4.0f;
    }

protected:
    void parameterChanged(uint32_t index, float value) override
    {
        if (index < kParameterCount)
        {
            fParams[index] = value;
            repaint();
        }
    }

    void stateChanged(const char* key, const char* value) override
    {
        if (std::strcmp(key, BARFORGE_PROMPT_KEY) == 0)
        {
            fPrompt = value;
            repaint();
        }
    }

    void onNanoDisplay() override
    {
        const Color background(24, 26, 31), panel(40, 44, 52), text(230, 232, 236),
            dim(150, 156, 168), accent(240, 150, 40);
        beginPath();
        rect(0, 0, getWidth(), getHeight());
        fillColor(background);
        fill();

        fontSize(18);
        textAlign(ALIGN_LEFT | ALIGN_MIDDLE);
        fillColor(text);
        this->text(16, 22, "Barforge Player", nullptr);

        drawBox(kPromptBox, panel, fPromptFocused ? accent : dim);
        fontSize(15);
        fillColor(fPrompt.empty() ? dim : text);
        const std::string shown = fPrompt.empty() && !fPromptFocused ? "type a prompt..." :
                                  fPrompt + (fPromptFocused ? "|" : "");
        this->text(kPromptBox.x + 8, kPromptBox.y + kPromptBox.h / 2, shown.c_str(), nullptr);

        drawButton(kBarsDown, "-", false);
        drawButton(kBarsUp, "+", false);
        char line[160];
        std::snprintf(line, sizeof line, "%d bars", (int)std::lround(fParams[kBars]));
        textAlign(ALIGN_CENTER | ALIGN_MIDDLE);
        fillColor(text);
        this->text(84, kBarsDown.y + 16, line, nullptr);
        drawButton(kGenerateBox, "Generate", fParams[kGenerate] >= 0.5f);
        drawButton(kContinueBox, "Continue", fParams[kContinue] >= 0.5f);

        textAlign(ALIGN_LEFT | ALIGN_MIDDLE);
        fontSize(14);
        const long playing = std::lround(fParams[kPlaying]) - 1; /* the output is slot + 1 */
        if (playing >= 0)
            std::snprintf(line, sizeof line, "Playing: slot %ld", playing);
        else
            std::snprintf(line, sizeof line, "Playing: nothing");
        fillColor(text);
        this->text(16, 146, line, nullptr);

        const int state = (int)std::lround(fParams[kServerState]);
        const int error = (int)std::lround(fParams[kServerError]);
        if (state == BF_SERVER_GENERATING)
            std::snprintf(line, sizeof line, "Server: generating %d %%",
                          (int)std::lround(100.0f * fParams[kServerProgress]));
        else if (state == BF_SERVER_ERROR)
            std::snprintf(line, sizeof line, "Server: error (%s)",
                          error > 0 && error <= BF_SERVER_N_ERRORS ? bf_server_error_codes[error - 1]
                                                                   : "unknown");
        else if (state >= 0 && state < BF_SERVER_N_STATES)
            std::snprintf(line, sizeof line, "Server: %s%s", bf_server_state_names[state],
                          state == BF_SERVER_QUEUED ? " (busy)" : "");
        fillColor(state == BF_SERVER_ERROR || state == BF_SERVER_NOT_CONNECTED ? accent : text);
        this->text(16, 172, line, nullptr);
        if (state == BF_SERVER_GENERATING)
        {
            beginPath();
            rect(260, 166, 244 * fParams[kServerProgress], 12);
            fillColor(accent);
            fill();
        }
    }

    bool onMouse(const MouseEvent& ev) override
    {
        if (ev.button != 1)
            return false;
        if (ev.press)
        {
            fPromptFocused = kPromptBox.contains(ev.pos);
            if (kGenerateBox.contains(ev.pos))
                press(kGenerate);
            else if (kContinueBox.contains(ev.pos))
                press(kContinue);
            else if (kBarsDown.contains(ev.pos) || kBarsUp.contains(ev.pos))
            {
                const float bars = fParams[kBars] + (kBarsUp.contains(ev.pos) ? 1.0f : -1.0f);
                fParams[kBars] = bars < 1.0f ? 1.0f : bars > 64.0f ? 64.0f : bars;
                editParameter(kBars, true);
                setParameterValue(kBars, fParams[kBars]);
                editParameter(kBars, false);
            }
        }
        else
        {
            release(kGenerate);
            release(kContinue);
        }
        repaint();
        return true;
    }

    bool onCharacterInput(const CharacterInputEvent& ev) override
    {
        if (!fPromptFocused || ev.character < 0x20 || ev.character == kKeyDelete)
            return false;
        if (fPrompt.size() + std::strlen(ev.string) <= kPromptMax)
            editPrompt(fPrompt + ev.string);
        return true;
    }

    bool onKeyboard(const KeyboardEvent& ev) override
    {
        if (!fPromptFocused || !ev.press)
            return false;
        if (ev.key == kKeyBackspace && !fPrompt.empty())
        {
            size_t end = fPrompt.size() - 1; /* a whole UTF-8 character */
            while (end > 0 && (fPrompt[end] & 0xC0) == 0x80)
                --end;
            editPrompt(fPrompt.substr(0, end));
            return true;
        }
        if (ev.key == kKeyEscape || ev.key == '\r')
        {
            fPromptFocused = false;
            repaint();
            return true;
        }
        return false;
    }

private:
    void drawBox(const Box& b, const Color& fillC, const Color& strokeC)
    {
        beginPath();
        roundedRect(b.x, b.y, b.w, b.h, 4);
        fillColor(fillC);
        fill();
        strokeColor(strokeC);
        strokeWidth(1.5f);
        stroke();
    }

    void drawButton(const Box& b, const char* label, bool down)
    {
        drawBox(b, down ? Color(240, 150, 40) : Color(58, 64, 76), Color(90, 98, 112));
        fontSize(15);
        textAlign(ALIGN_CENTER | ALIGN_MIDDLE);
        fillColor(Color(236, 238, 242));
        text(b.x + b.w / 2, b.y + b.h / 2, label, nullptr);
    }

    void press(uint32_t index)
    {
        fParams[index] = 1.0f;
        editParameter(index, true);
        setParameterValue(index, 1.0f);
    }

    void release(uint32_t index)
    {
        if (fParams[index] < 0.5f)
            return;
        fParams[index] = 0.0f;
        setParameterValue(index, 0.0f);
        editParameter(index, false);
    }

    void editPrompt(const std::string& prompt)
    {
        fPrompt = prompt;
        setState(BARFORGE_PROMPT_KEY, fPrompt.c_str());
        repaint();
    }

    float fParams[kParameterCount];
    std::string fPrompt;
    bool fPromptFocused = false;

    DISTRHO_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR(BarforgePlayerUI)
};

UI* createUI() { return new BarforgePlayerUI(); }

END_NAMESPACE_DISTRHO
