/*
 * The DPF player's non-real-time side. DPF has no worker API, so run() hands requests to this
 * thread through a lock-free single-producer ring, and takes a freshly attached segment back
 * through an atomic pointer; segments it no longer uses go back the same way to be unmapped
 * here. The thread owns the prompt (the host sets it from its own thread), so run() never
 * touches a string.
 */
#ifndef BARFORGE_REQUEST_THREAD_HPP
#define BARFORGE_REQUEST_THREAD_HPP

#include "barforge_requests.h"

#include "extra/Mutex.hpp"
#include "extra/RingBuffer.hpp"
#include "extra/Sleep.hpp"
#include "extra/String.hpp"
#include "extra/Thread.hpp"

#include <atomic>
#include <cstring>

START_NAMESPACE_DISTRHO

class RequestThread : public Thread
{
public:
    RequestThread() : Thread("barforge-requests")
    {
        fRing.createBuffer(32768); /* ~60 requests: run() sends at most 3 per block */
        bf_requester_open(&fRequester, "dpf");
        fLatest = bf_segment_open(fRequester.shm_name);
    }

    /* The audio side frees the segment it plays from; this frees the ones not handed over. */
    ~RequestThread() override
    {
        stopThread(2000);
        bf_segment_free(fFresh.exchange(nullptr));
        bf_segment_free(fRetired.exchange(nullptr));
        bf_requester_close(&fRequester);
    }

    /* Non-real-time, once: the segment attached at construction, for the audio thread. */
    bf_segment* initialSegment() const noexcept { return fLatest; }

    void setPrompt(const char* prompt)
    {
        const MutexLocker ml(fPromptLock);
        std::snprintf(fPrompt, sizeof fPrompt, "%s", prompt);
    }

    String prompt() const
    {
        const MutexLocker ml(fPromptLock);
        return String(fPrompt);
    }

    /* ---- audio thread (real-time safe) ---- */

    bool push(const bf_request& r) noexcept
    {
        if (r.kind == BF_REQ_CHECK)
            fCheckInFlight.store(true, std::memory_order_release);
        if (fRing.writeCustomType(r) && fRing.commitWrite())
            return true;
        if (r.kind == BF_REQ_CHECK)
            fCheckInFlight.store(false, std::memory_order_release);
        return false;
    }

    bool checkInFlight() const noexcept { return fCheckInFlight.load(std::memory_order_acquire); }

    /* The server's status (barforge_server_status.h), as numbers the audio thread can copy. */
    int serverState() const noexcept { return fState.load(std::memory_order_relaxed); }
    float serverProgress() const noexcept { return fProgress.load(std::memory_order_relaxed); }
    int serverError() const noexcept { return fError.load(std::memory_order_relaxed); }

    /* A replacement for `current` when one is ready and the last retired one was unmapped;
     * `current` is then retired (unmapped here later). */
    bf_segment* takeFresh(bf_segment* current) noexcept
    {
        if (fRetired.load(std::memory_order_acquire) != nullptr)
            return current;
        bf_segment* fresh = fFresh.exchange(nullptr, std::memory_order_acq_rel);
        if (fresh == nullptr)
            return current;
        fRetired.store(current, std::memory_order_release);
        return fresh;
    }

protected:
    void run() override
    {
        while (!shouldThreadExit())
        {
            bf_segment_free(fRetired.exchange(nullptr, std::memory_order_acq_rel));
            bf_request r;
            while (fRing.isDataAvailableForReading() && fRing.readCustomType(r))
                handle(r);
            bf_requester_poll(&fRequester);
            publishStatus();
            d_msleep(5);
        }
    }

private:
    void publishStatus() noexcept
    {
        fState.store((int)fRequester.status.state, std::memory_order_relaxed);
        fProgress.store(fRequester.status.progress, std::memory_order_relaxed);
        fError.store(fRequester.status.error, std::memory_order_relaxed);
    }

    void handle(bf_request& r)
    {
        if (r.kind == BF_REQ_GENERATE || r.kind == BF_REQ_CONTINUE)
        {
            const MutexLocker ml(fPromptLock);
            std::memcpy(r.prompt, fPrompt, sizeof r.prompt);
        }
        /* The segment to check is the newest this thread attached, not the audio thread's
         * pointer: that one may already be retired and unmapped. */
        r.segment = fLatest;
        bf_segment* fresh = bf_requester_handle(&fRequester, &r);
        if (r.kind != BF_REQ_CHECK)
            return;
        if (fresh != nullptr)
        {
            fLatest = fresh;
            bf_segment_free(fFresh.exchange(fresh, std::memory_order_acq_rel)); /* never taken */
        }
        fCheckInFlight.store(false, std::memory_order_release);
    }

    HeapRingBuffer fRing;
    bf_requester fRequester;
    bf_segment* fLatest = nullptr;
    std::atomic<bf_segment*> fFresh{nullptr}, fRetired{nullptr};
    std::atomic<bool> fCheckInFlight{false};
    std::atomic<int> fState{BF_SERVER_NOT_CONNECTED}, fError{0};
    std::atomic<float> fProgress{0.0f};
    mutable Mutex fPromptLock;
    char fPrompt[BF_PROMPT_BYTES] = {};
};

END_NAMESPACE_DISTRHO

#endif
